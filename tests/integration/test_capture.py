"""The capture engine against independent oracles, on random-weight models of all three families.

Oracles: eager ``output_attentions`` rows; the model's own logits; the residual identity of
pre-norm blocks; plain ``generate``; and, for the grid mapping, a vision tower made local
(attention outputs zeroed) so that a crafted patch changes exactly one image token.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.capture.engine import CaptureConfig, capture_generate, language_attention
from vrp.models import adapter_for
from vrp.toys.build import build_toy
from vrp.world.dataset import generate
from vrp.world.scene import WorldConfig, render

ARCHS = ["llava", "paligemma", "qwen2vl"]
QUESTIONS = [
    "Is there a red circle in the image?",
    "How many objects are in the image?",
    "What colour is the large square?",
]


@pytest.fixture(scope="module")
def adapters():
    out = {}
    for arch in ARCHS:
        model, processor = build_toy(arch, seed=11)
        # Random init gives near-uniform attention, where a wrong column mapping could hide
        # inside the tolerance: sharpen it by scaling the query/key projections.
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                layer.self_attn.q_proj.weight.mul_(5.0)
                layer.self_attn.k_proj.weight.mul_(5.0)
        out[arch] = adapter_for(model.config.model_type)(model=model.eval(), processor=processor, path=arch)
    return out


@pytest.fixture(scope="module")
def images():
    data, _ = generate(3, seed=8)
    return [render(d.scene, WorldConfig()) for d in data]


def _prompts(ad):
    return [ad.prompt(q) for q in QUESTIONS]


def _eager_generate(ad, images, steps):
    enc = ad.encode(images, _prompts(ad), padding_side="left")
    with torch.no_grad(), language_attention(ad.model, "eager"):
        out = ad.model.generate(
            **enc, max_new_tokens=steps, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id,
            output_attentions=True, return_dict_in_generate=True,
        )  # fmt: skip
    return enc, out


@pytest.mark.parametrize("arch", ARCHS)
def test_captured_attention_equals_eager_rows(adapters, images, arch):
    ad = adapters[arch]
    recs = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=4, dtype="float32"))
    enc, out = _eager_generate(ad, images, 4)
    pads = (enc["attention_mask"] == 0).sum(1)
    n_layers = len(ad.decoder_layers())
    for b, rec in enumerate(recs):
        for t in range(rec.n_steps):
            for layer in range(n_layers):
                eager_row = out.attentions[t][layer][b, :, -1, :].float()  # [H, keys]
                for g, grid_att in zip(rec.grids, rec.image_attention, strict=True):
                    want = eager_row[:, torch.as_tensor(g.token_index) + pads[b]].reshape(-1, g.rows, g.cols)
                    # the rows really vary across patches, so a shifted mapping cannot pass
                    assert want.max() - want.min() > 1e-2
                    got = torch.as_tensor(grid_att[layer, :, t])
                    assert (got - want).abs().max() <= 1e-5
                img_cols = torch.as_tensor(np.concatenate([g.token_index for g in rec.grids])) + pads[b]
                assert np.allclose(rec.image_mass[layer, :, t], eager_row[:, img_cols].sum(-1).numpy(), atol=1e-5)
    assert np.allclose(recs[0].image_mass + recs[0].text_mass, 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_of_last_layer_equals_model_logits(adapters, images, arch):
    ad = adapters[arch]
    recs = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=3, dtype="float32"))
    for rec in recs:
        lens = ad.logit_lens(rec.residual[:, -1, :])  # [T, V]
        assert np.allclose(torch.log_softmax(lens, -1).numpy(), rec.logprobs, atol=1e-4)
        assert (lens.argmax(-1).numpy() == rec.answer_ids).all()  # greedy answer = lens argmax
        # earlier layers give different distributions (the lens is not trivially the output)
        assert not np.allclose(ad.logit_lens(rec.residual[:, 1, :]).numpy(), lens.numpy(), atol=1e-3)


def test_logit_lens_applies_final_softcap(adapters):
    ad = adapters["paligemma"]
    h = torch.randn(3, ad.text_config.hidden_size)
    plain = ad.logit_lens(h)
    ad.text_config.final_logit_softcapping = 2.0
    try:
        capped = ad.logit_lens(h)
    finally:
        ad.text_config.final_logit_softcapping = None
    assert torch.allclose(capped, 2.0 * torch.tanh(plain / 2.0), atol=1e-6) and capped.abs().max() < 2.0


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_is_sum_of_writes(adapters, images, arch):
    ad = adapters[arch]
    (rec,) = capture_generate(ad, images[:1], _prompts(ad)[:1], CaptureConfig(max_new_tokens=3, dtype="float32"))
    h, a, m = rec.residual, rec.attn_write, rec.mlp_write  # [T, L+1, d], [T, L, d], [T, L, d]
    assert np.allclose(h[:, 1:], h[:, :-1] + a + m, atol=1e-5)
    assert np.abs(a).max() > 0 and np.abs(m).max() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_answers_identical_to_plain_generate_batched_and_unbatched(adapters, images, arch):
    ad = adapters[arch]
    enc = ad.encode(images, _prompts(ad), padding_side="left")
    with torch.no_grad():
        plain = ad.model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id)
    plain = plain[:, enc["input_ids"].shape[1] :].numpy()
    batched = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=5))
    for b, rec in enumerate(batched):
        assert (plain[b, : rec.n_steps] == rec.answer_ids).all()
        (single,) = capture_generate(ad, [images[b]], [_prompts(ad)[b]], CaptureConfig(max_new_tokens=5))
        assert (single.answer_ids == rec.answer_ids).all()
        # padding does not change what is captured (fp16 storage, batched vs alone)
        assert np.allclose(single.image_attention[0], rec.image_attention[0], atol=1e-5)
    assert ad.model.config.text_config._attn_implementation == "sdpa"  # restored


def test_selected_layers_only(adapters, images):
    ad = adapters["llava"]
    (rec,) = capture_generate(ad, images[:1], _prompts(ad)[:1], CaptureConfig(layers=(1, 3), max_new_tokens=2))
    (full,) = capture_generate(ad, images[:1], _prompts(ad)[:1], CaptureConfig(max_new_tokens=2))
    assert rec.layers == (1, 3) and rec.residual.shape[1] == 3 and rec.attn_write.shape[1] == 2
    assert np.array_equal(rec.residual[:, 1:], full.residual[:, [2, 4]])
    assert np.allclose(rec.image_attention[0], full.image_attention[0][[1, 3]])
    assert rec.residual.dtype == np.float16


# ---- grid mapping: a local vision tower and a crafted patch -------------------------


def _make_vision_local(model, arch):
    """Zero every vision attention output projection: each image token then depends only on
    its own patch(es), so a crafted patch changes exactly one token."""
    names = {"llava": "self_attn.out_proj", "paligemma": "self_attn.out_proj", "qwen2vl": "attn.proj"}[arch]
    tower = model.model.vision_tower if arch != "qwen2vl" else model.model.visual
    n = 0
    for name, mod in tower.named_modules():
        if name.endswith(names):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    assert n > 0


def _changed_positions(ad, base_imgs, crafted_imgs, prompt):
    captured = []
    handle = ad.decoder_layers()[0].register_forward_pre_hook(
        lambda m, a, kw: captured.append((a[0] if a else kw["hidden_states"]).detach().clone()), with_kwargs=True
    )
    try:
        encs = []
        for imgs in (base_imgs, crafted_imgs):
            enc = ad.encode(imgs, [prompt])
            with torch.no_grad():
                ad.model(**enc)
            encs.append(enc)
    finally:
        handle.remove()
    diff = (captured[0] - captured[1]).abs().amax(-1)[0]
    return diff.nonzero().flatten().tolist(), encs[0]


def _crafted(size, cell, box_px, colour=(255, 0, 0)):
    w, h = size
    base = Image.new("RGB", (w, h), (128, 128, 128))
    crafted = base.copy()
    r, c = cell
    crafted.paste(Image.new("RGB", (box_px, box_px), colour), (c * box_px, r * box_px))
    return base, crafted


@pytest.mark.parametrize(
    "arch, size, cell", [("llava", (48, 48), (2, 1)), ("paligemma", (48, 48), (0, 3)), ("qwen2vl", (72, 48), (3, 4))]
)
def test_grid_mapping_puts_a_crafted_patch_at_its_row_col(arch, size, cell):
    model, processor = build_toy(arch, seed=2)
    ad = adapter_for(model.config.model_type)(model=model.eval(), processor=processor, path=arch)
    _make_vision_local(model, arch)
    base, crafted = _crafted(size, cell, 12)
    changed, enc = _changed_positions(ad, [base], [crafted], ad.prompt("Describe the image."))
    (grid,) = ad.image_grids(enc, [base.size])[0]
    if arch == "qwen2vl":
        assert (grid.rows, grid.cols) == (4, 6)  # 48 x 72 pixels, 12 px per merged token: non-square
    r, c = cell
    assert changed == [int(grid.token_index[r * grid.cols + c])]


def test_two_qwen2vl_images_keep_separate_grids():
    model, processor = build_toy("qwen2vl", seed=2)
    ad = adapter_for(model.config.model_type)(model=model.eval(), processor=processor, path="q")
    _make_vision_local(model, "qwen2vl")
    first = Image.new("RGB", (48, 48), (128, 128, 128))
    base2, crafted2 = _crafted((72, 36), (1, 5), 12, colour=(0, 0, 255))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe the image."}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    changed, enc = _changed_positions(ad, [first, base2], [first, crafted2], prompt)
    g1, g2 = ad.image_grids(enc, [first.size, base2.size])[0]
    assert (g1.rows, g1.cols, g2.rows, g2.cols) == (4, 4, 3, 6)
    assert g1.token_index[-1] < g2.token_index[0]
    assert changed == [int(g2.token_index[1 * 6 + 5])]


def test_image_token_count_mismatch_is_a_clear_error(adapters, images):
    ad = adapters["paligemma"]
    enc = ad.encode(images[:1], _prompts(ad)[:1])
    enc["input_ids"] = enc["input_ids"].clone()
    enc["input_ids"][0, 3] = ad.tokenizer.convert_tokens_to_ids("is")  # break the image block
    with pytest.raises(ValueError, match="contiguous image tokens"):
        ad.image_grids(enc, [images[0].size])


def test_eager_fallback_when_attention_bypasses_the_capture_function(adapters, images, monkeypatch, caplog):
    """A model whose language attention never calls vrp_capture gets the logged eager
    fallback, with the same rows as eager output_attentions (never a silent uniform map)."""
    from vrp.capture import engine

    ad = adapters["qwen2vl"]
    ref = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=3, dtype="float32"))
    monkeypatch.setattr(
        engine,
        "language_attention",
        lambda model, impl: contextlib.nullcontext() if impl != "eager" else language_attention(model, impl),
    )
    with caplog.at_level("WARNING"):
        got = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=3, dtype="float32"))
    assert "falling back to eager" in caplog.text
    for a, b in zip(ref, got, strict=True):
        assert (a.answer_ids == b.answer_ids).all()
        assert np.allclose(a.image_attention[0], b.image_attention[0], atol=1e-5)
        assert np.allclose(a.image_mass, b.image_mass, atol=1e-5)


@pytest.mark.parametrize("name", ["toy-llava", "toy-paligemma", "toy-qwen2vl"])
def test_shipped_toys_capture_equals_eager_and_lens(name, images):
    """The same oracles on the trained, shipped checkpoints (sharp, learned attention)."""
    from vrp.models import load_adapter

    ad = load_adapter(name)
    recs = capture_generate(ad, images, _prompts(ad), CaptureConfig(max_new_tokens=3, dtype="float32"))
    enc, out = _eager_generate(ad, images, 3)
    pads = (enc["attention_mask"] == 0).sum(1)
    for b, rec in enumerate(recs):
        for t in range(rec.n_steps):
            for layer in range(len(ad.decoder_layers())):
                row = out.attentions[t][layer][b, :, -1, :].float()
                g = rec.grids[0]
                want = row[:, torch.as_tensor(g.token_index) + pads[b]].reshape(-1, g.rows, g.cols)
                assert (torch.as_tensor(rec.image_attention[0][layer, :, t]) - want).abs().max() <= 1e-5
        assert np.allclose(torch.log_softmax(ad.logit_lens(rec.residual[:, -1]), -1).numpy(), rec.logprobs, atol=1e-4)
        assert np.allclose(rec.residual[:, 1:], rec.residual[:, :-1] + rec.attn_write + rec.mlp_write, atol=1e-4)
