"""Gemma 3 specifics on the tiny model (real classes and processor): sliding-window blocks whose
window cuts image keys, the bidirectional attention among an image's tokens, pan-and-scan crops
as extra views, and a clear error on a token count that does not match the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.capture.attention import IMPL_NAME, AttentionRecorder, recording, register
from vrp.capture.engine import CaptureConfig, capture_generate, language_attention
from vrp.models import adapter_for
from vrp.models.gemma3 import crop_boxes
from vrp.models.sites import hooks
from vrp.toys.tiny.gemma3 import build_gemma3, make_vision_local

WINDOW = 20  # the sliding blocks' window: it ends inside the image for the decision position
QUESTION = "Is there a red circle in the image?"


def _adapter(window: int = WINDOW, seed: int = 3, sharpen: bool = True):
    model, processor = build_gemma3(seed, sliding_window=window)
    if sharpen:  # sharpen the attention so that a wrong column cannot hide; Gemma 3 normalizes q and k
        with torch.no_grad():  # per head (scaling q_proj would do nothing): its norms scale by 1 + weight
            for block in model.model.language_model.layers:
                block.self_attn.q_norm.weight.add_(1.0)
                block.self_attn.k_norm.weight.add_(1.0)
    return adapter_for("gemma3")(model=model.eval(), processor=processor, path="tiny-gemma3")


def _image(w: int = 40, h: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, size=(h, w, 3), dtype=np.uint8))


class _Rows(AttentionRecorder):
    """Keeps the whole last row over every key, and the mask the capture function received."""

    def __init__(self):
        super().__init__()
        self.masks: dict[int, torch.Tensor] = {}

    def observe(self, layer_idx, query, key, attention_mask, scaling, softcap):
        super().observe(layer_idx, query, key, attention_mask, scaling, softcap)
        self.masks[layer_idx] = attention_mask


def test_captured_rows_equal_eager_where_the_sliding_window_cuts_image_keys():
    ad = _adapter()
    types = list(ad.text_config.layer_types)
    assert set(types) == {"sliding_attention", "full_attention"} and ad.text_config.sliding_window == WINDOW
    image, prompt = _image(), ad.prompt(QUESTION)
    (rec,) = capture_generate(ad, [image], [prompt], CaptureConfig(max_new_tokens=1, dtype="float32"))
    enc = ad.encode([image], [prompt])
    (grid,) = ad.image_grids(enc, [image.size])[0]
    v, P = grid.view, enc["input_ids"].shape[1]
    with torch.no_grad(), language_attention(ad.model, "eager"):
        eager = ad.model(**enc, output_attentions=True).attentions  # per block [1, H, P, P]
    register()
    rows = _Rows()
    with torch.no_grad(), language_attention(ad.model, IMPL_NAME), recording(rows):
        ad.model(**enc)
    far = v.token_index[v.token_index <= P - 1 - WINDOW]  # image keys outside the decision position's window
    assert 0 < len(far) < len(v.token_index)
    for layer, kind in enumerate(types):
        want = eager[layer][0, :, -1].numpy()  # [H, P]: the decision position's row over every key
        np.testing.assert_allclose(rows.rows[layer][0][0].cpu().numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            rec.image_attention[0][layer, :, 0],
            want[:, v.token_index].reshape(-1, v.rows, v.cols),
            rtol=1e-5,
            atol=1e-6,
        )
        mask = rows.masks[layer]
        assert mask is not None and mask.dtype == torch.bool  # the model's own mask reached the capture function
        if kind == "sliding_attention":
            assert (want[:, far] == 0).all() and not mask[0, 0, -1, far].any()
        else:
            assert (want[:, far] > 0).all() and mask[0, 0, -1, far].all()


def test_an_image_token_sees_later_tokens_of_its_image_and_text_does_not():
    ad = _adapter()
    image, prompt = _image(), ad.prompt(QUESTION)
    enc = ad.encode([image], [prompt])
    (grid,) = ad.image_grids(enc, [image.size])[0]
    first, last = int(grid.token_index[0]), int(grid.token_index[-1])
    boi = int(grid.separators[0])

    def block0_output(perturb_last: bool, bidirectional: bool = True) -> torch.Tensor:
        seen = []
        fns = [("blocks.0.resid_post", lambda h: seen.append(h.detach().clone()))]
        if perturb_last:

            def bump(h):
                h = h.clone()
                h[:, last] += 1.0
                return h

            fns.insert(0, ("embed", bump))
        inputs = enc if bidirectional else {k: x for k, x in enc.items() if k != "token_type_ids"}
        with torch.no_grad(), language_attention(ad.model, IMPL_NAME), hooks(ad, fns):
            ad.model(**inputs)
        return seen[0][0]

    base, moved = block0_output(False), block0_output(True)
    # block 0 is a sliding block: its window looks back, yet the first image token sees the last one
    # because an image's tokens attend to each other both ways
    assert ad.text_config.layer_types[0] == "sliding_attention"
    assert not torch.allclose(base[first], moved[first])
    assert torch.equal(base[boi], moved[boi])  # <start_of_image> is text: causal
    # the same forward without token_type_ids is causal: the first image token no longer sees it
    assert torch.equal(block0_output(False, False)[first], block0_output(True, False)[first])


def _decoder_input(ad, enc) -> torch.Tensor:
    seen = []
    with torch.no_grad(), hooks(ad, {"embed": lambda h: seen.append(h.detach().clone())}):
        ad.model(**enc)
    return seen[0][0]


def test_pan_and_scan_crops_are_extra_views_with_their_pixel_boxes():
    ad = _adapter(window=512, sharpen=False)
    make_vision_local(ad.model)
    w, h = 110, 40  # cut into 3 crops of ceil(110 / 3) = 37 px, the last one 36 px wide
    base = Image.new("RGB", (w, h), (128, 128, 128))
    prompt = ad.prompt(QUESTION)

    def encode(image):
        ad.tokenizer.padding_side = "left"
        return dict(ad.processor(images=[[image]], text=[prompt], return_tensors="pt", do_pan_and_scan=True,
                                 pan_and_scan_min_crop_size=8))  # fmt: skip

    enc = encode(base)
    (grid,) = ad.image_grids(enc, [(w, h)])[0]
    assert [v.name for v in grid.views] == ["image", "crop0", "crop1", "crop2"] and grid.canonical == 0
    assert [v.box for v in grid.views] == [(0.0, 0.0, 110.0, 40.0), *crop_boxes((w, h), 3)]
    assert crop_boxes((w, h), 3)[-1] == (74.0, 0.0, 110.0, 40.0)
    ids = enc["input_ids"][0].numpy()
    cfg = ad.model.config
    assert (
        sorted(grid.separators.tolist()) == np.flatnonzero(np.isin(ids, [cfg.boi_token_id, cfg.eoi_token_id])).tolist()
    )
    assert sorted(grid.patch_index.tolist()) == np.flatnonzero(ids == cfg.image_token_id).tolist()

    # paint the middle of a cell of the middle crop: exactly the cells over it change, in the crop and the full view
    crop = grid.views[2]
    r, c = 1, 2
    x0, y0, x1, y1 = crop.to_image(((c + 0.25) / crop.cols, (r + 0.25) / crop.rows,
                                    (c + 0.75) / crop.cols, (r + 0.75) / crop.rows))  # fmt: skip
    crafted = base.copy()
    crafted.paste(Image.new("RGB", (round(x1 - x0), round(y1 - y0)), (250, 10, 10)), (round(x0), round(y0)))
    changed = set(
        (_decoder_input(ad, enc) - _decoder_input(ad, encode(crafted))).abs().amax(-1).nonzero().flatten().tolist()
    )
    allowed = set()
    for v in grid.views:
        for cell in range(v.rows * v.cols):
            cy, cx = divmod(cell, v.cols)
            px = v.to_image((cx / v.cols, cy / v.rows, (cx + 1) / v.cols, (cy + 1) / v.rows))
            if px[0] < x1 and px[2] > x0 and px[1] < y1 and px[3] > y0:
                allowed.add(int(v.token_index[cell]))
    assert int(crop.token_index[r * crop.cols + c]) in changed
    assert any(int(t) in changed for t in grid.views[0].token_index)
    assert changed <= allowed and not changed & {int(t) for t in grid.views[1].token_index}


def test_a_token_count_that_does_not_match_the_grid_is_an_error():
    ad = _adapter(window=512, sharpen=False)
    image = _image()
    enc = ad.encode([image], [ad.prompt(QUESTION)])
    ids = enc["input_ids"]
    soft = np.flatnonzero(ids[0].numpy() == ad.model.config.image_token_id)
    enc["input_ids"] = torch.cat([ids[:, : soft[0]], ids[:, soft[0] + 1 :]], dim=1)  # one soft token fewer
    with pytest.raises(ValueError, match=r"gemma3: expected 16 image soft tokens .* found 15"):
        ad.image_grids(enc, [image.size])


def test_decode_steps_where_the_cache_dropped_keys_outside_the_window():
    ad = _adapter()
    image, prompt = _image(), ad.prompt(QUESTION)
    (rec,) = capture_generate(ad, [image], [prompt], CaptureConfig(max_new_tokens=3, dtype="float32"))
    enc = ad.encode([image], [prompt])
    (grid,) = ad.image_grids(enc, [image.size])[0]
    v, P = grid.view, enc["input_ids"].shape[1]
    with torch.no_grad(), language_attention(ad.model, "eager"):
        out = ad.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id,
                                output_attentions=True, return_dict_in_generate=True)  # fmt: skip
    for t in range(rec.n_steps):
        for layer in range(ad.n_blocks):
            row = out.attentions[t][layer][0, :, -1]  # [H, keys]: the last keys of the P + t positions
            full = torch.zeros(row.shape[0], P + t)
            full[:, P + t - row.shape[1] :] = row
            want = full[:, torch.as_tensor(v.token_index)].reshape(-1, v.rows, v.cols).numpy()
            np.testing.assert_allclose(rec.image_attention[0][layer, :, t], want, rtol=1e-5, atol=1e-6)


def test_one_bos_although_the_chat_template_writes_it():
    ad = _adapter(window=512, sharpen=False)
    prompts = [ad.prompt(QUESTION), ad.prompt("How many objects?")]
    assert all(p.startswith("<bos>") for p in prompts)
    enc = ad.encode([_image(), _image(24, 44)], prompts)
    bos = ad.tokenizer.bos_token_id
    for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True):
        real = [i for i, m in zip(ids, mask, strict=True) if m]
        assert real[0] == bos and real.count(bos) == 1
