"""Every family beyond the first three, on its tiny random-weight model with its real processor
(``vrp.toys.tiny``), against independent oracles: eager ``output_attentions`` rows, the
model's own logits and plain ``generate``, a local vision tower with a crafted patch for the
view mapping, and the run, monitor and intervention paths end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.capture.engine import CaptureConfig, capture_generate, image_sizes, language_attention
from vrp.models import adapter_for
from vrp.toys.tiny import build_tiny, family, model_types

TYPES = model_types()
QUESTIONS = ["Is there a red circle in the image?", "How many objects are in the image?"]


def _adapter(model_type: str, seed: int = 3, sharpen: bool = True):
    model, processor = build_tiny(model_type, seed)
    if sharpen:  # random init attends almost uniformly: sharpen it so that a wrong column cannot hide
        for block in model.get_submodule(adapter_for(model.config.model_type).module_paths["decoder_layers"]):
            if hasattr(block, "self_attn"):  # (a hybrid's linear-attention blocks have none)
                block.self_attn.scaling *= 4.0  # the score scale eager and vrp_capture both use
    return adapter_for(model.config.model_type)(model=model, processor=processor, path=model_type)


def _images(model_type: str) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for w, h in family(model_type).sizes:
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        out.append(Image.fromarray(arr))
    return out


@pytest.fixture(scope="module", params=TYPES)
def ad(request):
    return _adapter(request.param)


def _batch(ad):
    images = _images(ad.model.config.model_type)[:2]
    prompts = [ad.prompt(q) for q in QUESTIONS[: len(images)]]
    return images, prompts


def test_captured_attention_equals_eager_rows_on_every_view(ad):
    images, prompts = _batch(ad)
    recs = capture_generate(ad, images, prompts, CaptureConfig(max_new_tokens=3, dtype="float32"))
    enc = ad.encode(images, prompts, padding_side="left")
    grids = ad.image_grids(enc, image_sizes(images))
    with torch.no_grad(), language_attention(ad.model, "eager"):
        out = ad.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id,
                                output_attentions=True, return_dict_in_generate=True)  # fmt: skip
    pads = (enc["attention_mask"] == 0).sum(1).tolist()
    for b, rec in enumerate(recs):
        assert [len(g.views) for g in rec.grids] == [len(g.views) for g in grids[b]]
        assert rec.attention_layers == ad.attention_blocks()
        for t in range(rec.n_steps):
            step = out.attentions[t]  # per block, or per attention block only (a hybrid model)
            for pos, layer in enumerate(rec.attention_layers):
                eager = step[layer if len(step) == ad.n_blocks else pos][b, :, -1]  # [H, keys], padded
                for g, views in zip(grids[b], rec.view_attention, strict=True):
                    for v, got in zip(g.views, views, strict=True):
                        want = eager[:, torch.as_tensor(v.token_index)].reshape(-1, v.rows, v.cols).numpy()
                        np.testing.assert_allclose(got[pos, :, t], want, rtol=1e-5, atol=1e-6)
            # the records' positions are the unpadded ones
            assert all(
                np.array_equal(g.token_index, pg.token_index - pads[b])
                for g, pg in zip(rec.grids, grids[b], strict=True)
            )


def test_answers_are_plain_generates_batched_with_padding(ad):
    images, prompts = _batch(ad)
    recs = capture_generate(ad, images, prompts, CaptureConfig(max_new_tokens=4))
    enc = ad.model_inputs(images, prompts)
    with torch.no_grad():
        plain = ad.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id)
    gen = plain[:, enc["input_ids"].shape[1] :].tolist()
    for rec, ids in zip(recs, gen, strict=True):
        assert rec.answer_ids.tolist() == ids[: rec.n_steps]
    for b in range(len(images)):  # and each item alone gives the same answer
        (alone,) = capture_generate(ad, [images[b]], [prompts[b]], CaptureConfig(max_new_tokens=4))
        assert alone.answer_ids.tolist() == recs[b].answer_ids.tolist()


def test_logit_lens_of_the_last_block_is_the_models_logits(ad):
    images, prompts = _batch(ad)
    (rec,) = capture_generate(ad, images[:1], prompts[:1], CaptureConfig(max_new_tokens=2, dtype="float32"))
    lens = ad.logit_lens(rec.residual[0, -1][None]).float()
    want = torch.log_softmax(lens, -1)[0].numpy()
    np.testing.assert_allclose(want, rec.logprobs[0], rtol=1e-4, atol=1e-4)


def test_residual_is_the_sum_of_the_writes_at_the_decision_position(ad):
    """h_l = h_(l-1) + attn_out_l + mlp_out_l where the signals read it (Qwen3-VL's deepstack
    adds at image positions only)."""
    images, prompts = _batch(ad)
    (rec,) = capture_generate(ad, images[:1], prompts[:1], CaptureConfig(max_new_tokens=2, dtype="float32"))
    for t in range(rec.n_steps):
        r, a, m = rec.residual[t], rec.attn_write[t], rec.mlp_write[t]
        np.testing.assert_allclose(r[1:], r[:-1] + a + m, rtol=1e-4, atol=1e-4)


def _decoder_input(ad, images, prompt):
    seen = []
    from vrp.models.sites import hooks

    with torch.no_grad(), hooks(ad, {"embed": lambda h: seen.append(h.detach().clone())}):
        enc = ad.encode(images, [prompt])
        ad.model(**enc)
    return seen[0][0], enc


@pytest.mark.parametrize("model_type", TYPES)
def test_a_crafted_patch_changes_exactly_the_tokens_of_its_cells(model_type):
    """With a local vision tower, painting one region of the image changes the decoder's input
    only at the patch tokens whose cells (in every view) cover that region."""
    ad = _adapter(model_type, sharpen=False)
    family(model_type).make_vision_local(ad.model)
    for w, h in family(model_type).sizes:
        base = Image.new("RGB", (w, h), (128, 128, 128))
        grid = ad.image_grids(ad.encode([base], [ad.prompt("Describe the image.")]), [(w, h)])[0][0]
        view = grid.view
        # one cell of the canonical view, well inside the image
        r, c = view.rows // 2, view.cols // 3
        x0, y0, x1, y1 = view.to_image(((c + 0.25) / view.cols, (r + 0.25) / view.rows,
                                        (c + 0.75) / view.cols, (r + 0.75) / view.rows))  # fmt: skip
        crafted = base.copy()
        crafted.paste(Image.new("RGB", (max(1, round(x1 - x0)), max(1, round(y1 - y0))), (250, 10, 10)),
                      (round(x0), round(y0)))  # fmt: skip
        e0, enc = _decoder_input(ad, [base], ad.prompt("Describe the image."))
        e1, _ = _decoder_input(ad, [crafted], ad.prompt("Describe the image."))
        changed = set((e0 - e1).abs().amax(-1).nonzero().flatten().tolist())
        (grid,) = ad.image_grids(enc, [(w, h)])[0]
        assert int(grid.view.token_index[r * view.cols + c]) in changed, (model_type, (w, h))
        allowed = set()
        for v in grid.views:  # cells of any view whose pixels touch the painted square
            for cell in range(v.rows * v.cols):
                cy, cx = divmod(cell, v.cols)
                px = v.to_image((cx / v.cols, cy / v.rows, (cx + 1) / v.cols, (cy + 1) / v.rows))
                if px[0] < x1 and px[2] > x0 and px[1] < y1 and px[3] > y0:
                    allowed.add(int(v.token_index[cell]))
        assert changed <= allowed, (model_type, (w, h), sorted(changed - allowed))


def test_mlp_bypass_equals_zeroing_every_mlp_unit(ad):
    from vrp.interventions import ablate_units, bypass

    images, prompts = _batch(ad)
    enc = ad.model_inputs(images[:1], prompts[:1])
    d = int(ad.text_config.hidden_size)
    with torch.no_grad():
        clean = ad.model(**enc).logits
        with ablate_units(ad, "blocks.1.mlp_out", range(d)):
            zeroed = ad.model(**enc).logits
        with bypass(ad, "blocks.1.mlp_out"):
            bypassed = ad.model(**enc).logits
    assert torch.equal(zeroed, bypassed) and not torch.allclose(zeroed, clean, atol=1e-5)


@pytest.mark.parametrize("model_type", TYPES)
def test_vrp_run_and_the_monitor_end_to_end(model_type, tmp_path):
    """A saved tiny model loads through vrp.load, answers a ShapesWorld run (every item, every
    signal defined where it should be), and a monitor attached to it reads the capture's residual."""
    import math

    import pyarrow.parquet as pq

    import vrp
    from tests.helpers import cli_run
    from vrp.monitor.files import write_monitor
    from vrp.monitor.identity import content_sha256, model_sha256
    from vrp.toys.tiny import save_tiny

    path = save_tiny(model_type, tmp_path / "model", seed=1)
    run = tmp_path / "run"
    cli_run(run, "--data", "shapesworld:2", "--samples", "2", "--max-new-tokens", "3", model=path)
    rows = pq.read_table(run / "items.parquet").to_pylist()
    assert len(rows) == 9 and all(not math.isnan(r["attn_entropy"]) for r in rows)
    assert all(not math.isnan(r["margin_peak"]) for r in rows)
    model = vrp.load(path)
    item = vrp.load_items("shapesworld:2", root=run, seed=0)[0]
    t = vrp.trace(model, item, samples=0, max_new_tokens=3)
    d, n = model.text_config.hidden_size, model.n_blocks
    rng = np.random.default_rng(0)
    arrays = {"coef": rng.normal(size=d) * 0.3, "mean": np.zeros(d), "scale": np.ones(d), "intercept": np.zeros(1)}
    doc = {
        "model": {"model_type": model_type, "sha256": model_sha256(path), "d_model": d, "n_layers": n,
                  "dtype": "float32", "name": model_type, "content_sha256": content_sha256(path)},
        "generation": {"max_new_tokens": 3, "batch_size": 2},
        "probe": {"residual_layer": n, "input_dtype": "float16"},
        "threshold": {"value": 0.5},
    }  # fmt: skip
    monitor = vrp.Monitor.load(write_monitor(tmp_path / "monitor", arrays, doc)).attach(model)
    answer = monitor.ask(item.image, item.question)
    assert answer.text == t.answer
    assert answer.p_correct == pytest.approx(float(monitor.p_correct(t.residual(-1)[None])[0]), rel=1e-5)
