"""The public API (``vrp.load``, ``vrp.trace``, ``vrp.Trace``, ``vrp.hooks``) against
independent oracles: HF's own ``output_hidden_states`` / eager ``output_attentions`` /
logits, a run directory's stored rows, and the named sites' module outputs."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import vrp
from tests.helpers import cli_run
from vrp.capture.engine import language_attention
from vrp.models.sites import SiteError, parse, residual_block, residual_index, residual_site, site_names

ARCHS = ["llava", "paligemma", "qwen2vl"]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return vrp.load_items("shapesworld:4", root=tmp_path_factory.mktemp("items"), seed=3)


@pytest.fixture(scope="module", params=ARCHS)
def model(request, random_toy_dirs):
    return vrp.load(random_toy_dirs[request.param])


def _forward(model, item, **kw):
    enc = model.inputs(item.image, item.question)
    with torch.no_grad():
        return enc, model.model(**enc, **kw)


def test_residual_is_hfs_hidden_state_at_the_decision_position(model, items):
    t = vrp.trace(model, items[0], samples=0)
    _, out = _forward(model, items[0], output_hidden_states=True)
    hs = out.hidden_states  # HF: index 0 the embeddings, l + 1 block l's output (the last after the final norm)
    np.testing.assert_allclose(t.residual("embed"), hs[0][0, -1].numpy(), rtol=1e-5, atol=1e-5)
    for block in range(model.n_blocks - 1):
        np.testing.assert_allclose(t.residual(block), hs[block + 1][0, -1].numpy(), rtol=1e-4, atol=1e-4)
        assert np.array_equal(t.residual(block), t.residual(f"blocks.{block}.resid_post"))
    assert np.array_equal(t.residual(-1), t.residual(model.n_blocks - 1))


def test_logit_lens_at_the_last_block_is_the_models_own_logits(model, items):
    t = vrp.trace(model, items[1], samples=0)
    _, out = _forward(model, items[1])
    np.testing.assert_allclose(t.logit_lens(-1), out.logits[0, -1].numpy(), rtol=1e-4, atol=1e-4)
    top, p = t.top_tokens(-1, k=3)[0]
    assert top == model.tokenizer.decode([int(t.capture.answer_ids[0])])
    assert p == pytest.approx(math.exp(t.capture.logprobs[0].max()), rel=1e-4)


def test_attention_is_eager_attention_over_the_patch_grid(model, items):
    t = vrp.trace(model, items[2], samples=0)
    enc = model.inputs(items[2].image, items[2].question)
    with torch.no_grad(), language_attention(model.model, "eager"):
        att = model.model(**enc, output_attentions=True).attentions  # per block [1, H, q, k]
    g = t.capture.grids[0]
    for block in range(model.n_blocks):
        eager = att[block][0, :, -1, g.token_index].reshape(-1, g.rows, g.cols).numpy()  # [H, rows, cols]
        np.testing.assert_allclose(t.attention(block, head="all"), eager, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(t.attention(block, head=1), eager[1], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(t.attention(block), eager.mean(0), rtol=1e-4, atol=1e-6)
    m = t.attention(-1, step=None, normalize=True)
    assert m.shape == (g.rows, g.cols) and m.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(t.attention_maps()[-1], m, rtol=1e-5)


def test_trace_signals_are_the_numbers_the_run_stores(tmp_path):
    """`vrp.trace` on one item alone gives the row `vrp run` stored for it in a batch of 16."""
    run = tmp_path / "run"
    cli_run(run, "--data", "shapesworld:6", "--seed", "4", "--samples", "3")
    table = pq.read_table(run / "items.parquet").to_pylist()
    model = vrp.load("toy-llava")
    items = vrp.load_items("shapesworld:6", root=run, seed=4)  # the run generated its data into run/data
    by_id = {it.id: it for it in items}
    for row in table[:: max(1, len(table) // 5)]:
        t = vrp.trace(model, by_id[row["id"]], samples=3, seed=4)
        assert t.answer == row["answer"] and t.correct == row["correct"]
        assert list(t.samples) == row["samples"]
        for name, value in t.signals().items():
            stored = row[name]
            if math.isnan(value):
                assert stored is None or math.isnan(stored), name
            else:
                assert value == pytest.approx(stored, rel=1e-4, abs=1e-5), name


def test_lists_are_batched_and_equal_to_single_traces(model, items):
    images = [it.image for it in items[:3]]
    questions = [it.question for it in items[:3]]
    batch = vrp.trace(model, images, questions, samples=0, batch_size=2)
    assert [t.question for t in batch] == questions
    for t, im, q in zip(batch, images, questions, strict=True):
        one = vrp.trace(model, im, q, samples=0)
        assert one.answer == t.answer
        np.testing.assert_allclose(one.residual(-1), t.residual(-1), rtol=1e-4, atol=1e-4)


def test_without_gold_the_gold_signals_are_nan_and_with_it_the_trace_is_scored(model, items):
    it = items[0]
    bare = vrp.trace(model, it.image, it.question, samples=0)
    assert bare.correct is None and bare.score is None
    needs = {s.name: s.needs for s in vrp.signals.SIGNALS}
    sig = bare.signals()
    assert all(math.isnan(sig[n]) for n, w in needs.items() if w)  # no gold answer, no region
    gold = vrp.trace(model, it.image, it.question, answers=list(it.answers), task=it.task, regions=it.regions,
                     samples=0)  # fmt: skip
    assert gold.correct == vrp.trace(model, it, samples=0).correct
    assert not math.isnan(gold.signals()["margin_last"]) and not math.isnan(gold.signals()["attn_region_mass"])


def test_hooks_read_and_replace_named_sites(model, items):
    enc = model.inputs(items[0].image, items[0].question)
    seen = {}
    with vrp.hooks(model, {"blocks.0.resid_post": lambda h: seen.setdefault("r0", h.clone())}):
        _, out = _forward(model, items[0], output_hidden_states=True)
    assert torch.equal(seen["r0"], out.hidden_states[1])
    clean = out.logits
    with vrp.hooks(model, {"embed": lambda h: h * 0}), torch.no_grad():
        zeroed = model.model(**enc).logits
    assert not torch.allclose(zeroed, clean)
    modules = [m for b in model.decoder_layers() for m in (b, b.mlp, b.self_attn, b.self_attn.o_proj)]

    def n_hooks() -> list[int]:  # HF keeps hooks of its own (output capturing): compare counts
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules]

    before = n_hooks()
    with pytest.raises(RuntimeError, match="boom"), vrp.hooks(model, {"blocks.-1.mlp_out": lambda h: None}):
        assert sum(n_hooks()) == sum(before) + 1
        raise RuntimeError("boom")
    assert n_hooks() == before  # removed, also after an exception
    with torch.no_grad():
        assert torch.equal(model.model(**enc).logits, clean)


def test_trace_reports_bad_input_clearly(model, items, tmp_path):
    with pytest.raises(ValueError, match="image file not found"):
        vrp.trace(model, str(tmp_path / "missing.png"), "Is there a cat?")
    with pytest.raises(ValueError, match="one entry per image"):
        vrp.trace(model, [items[0].image, items[1].image], ["only one"])
    with pytest.raises(vrp.ConfigError, match="unknown TraceConfig keys"):
        vrp.trace(model, items[0], sample=3)
    with pytest.raises(vrp.ConfigError, match="samples must be"):
        vrp.trace(model, items[0], samples=-1)
    t = vrp.trace(model, items[0], samples=0, layers=(0, -1))
    with pytest.raises(ValueError, match="was not recorded"):
        t.attention(1)
    with pytest.raises(ValueError, match="signals need every decoder block"):
        t.signals()
    assert t.residual(-1).shape == (model.text_config.hidden_size,)


def test_site_names_and_the_residual_index():
    assert parse("blocks.-1.resid_post", 4).name == "blocks.3.resid_post"
    assert [residual_index(x, 4) for x in ("embed", 0, -1, "blocks.2.resid_post")] == [0, 1, 4, 3]
    assert [residual_site(i) for i in (0, 1, 4)] == ["embed", "blocks.0.resid_post", "blocks.3.resid_post"]
    assert [residual_block(i) for i in (0, 1, 4)] == [None, 0, 3]
    assert all(parse(n, 2).name == n for n in site_names(2))
    for bad in ("blocks.4.resid_post", "blocks.0.resid", "embeds", "blocks.x.mlp_out"):
        with pytest.raises(SiteError):
            parse(bad, 4)
    with pytest.raises(SiteError, match="not on the residual stream"):
        residual_index("blocks.0.mlp_out", 4)


def test_one_question_for_many_images_and_ids_from_content(items):
    model = vrp.load("toy-llava")
    images = sorted({it.image for it in items})[:2]  # two different images
    both = vrp.trace(model, images, "How many objects are in the image?", answers="2", task="counting", samples=3)
    assert [t.question for t in both] == ["How many objects are in the image?"] * 2
    assert [t.item.answers for t in both] == [("2",), ("2",)]
    # an image's id (its samples' seed) depends on its pixels and question, not on its place in the list
    swapped = vrp.trace(model, images[::-1], "How many objects are in the image?", samples=3)
    assert [t.item.id for t in swapped] == [t.item.id for t in both][::-1]
    assert [t.samples for t in swapped] == [t.samples for t in both][::-1]
    assert both[0].item.id != both[1].item.id
    with pytest.raises(ValueError, match="one entry per image"):
        vrp.trace(model, images, ["one question"])
