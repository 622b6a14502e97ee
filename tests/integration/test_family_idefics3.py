"""Idefics3's and SmolVLM's tiling and views on their tiny models (``vrp.toys.tiny.idefics3``):
the recomputed tile grid against the image processor's own ``return_row_col_info``, the
stitched tile grid's and the global view's token order against a crafted patch through a local
vision tower, the separators, the global-only layout, and loud errors on a mismatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.models import adapter_for
from vrp.models.idefics3 import Idefics3Adapter, tile_grid
from vrp.models.sites import hooks
from vrp.models.smolvlm import SmolVLMAdapter
from vrp.toys.tiny import build_tiny, family
from vrp.toys.tiny.idefics3 import GEOMETRY

FAMILIES = ("idefics3", "smolvlm")
# (width, height) -> (tile rows, tile cols), the same for both tiny processors (longest edge 2 tiles)
TILINGS = {
    (240, 100): (1, 2),  # wide, upscaled
    (90, 200): (2, 1),  # tall, upscaled
    (300, 280): (2, 2),  # near-square, downscaled
    (40, 30): (2, 2),  # small: upscaled to the longest edge first, so it still has tiles
    (500, 60): (1, 2),  # very wide
    (20, 400): (2, 1),  # very tall
}


def _side(model_type: str) -> int:
    tile, patch, scale, _ = GEOMETRY[model_type]
    return tile // patch // scale


def _tile(model_type: str) -> int:
    return GEOMETRY[model_type][0]


@pytest.fixture(scope="module", params=FAMILIES)
def ad(request):
    model, processor = build_tiny(request.param, seed=0)
    ad = adapter_for(request.param)(model=model, processor=processor, path=request.param)
    family(request.param).make_vision_local(ad.model)
    return ad


def _encode(ad, images):
    return ad.encode(images, [ad.prompt("Describe the image.")] * len(images))


def _embedded(ad, image):
    seen = []
    enc = _encode(ad, [image])
    with torch.no_grad(), hooks(ad, {"embed": lambda h: seen.append(h.detach().clone())}):
        ad.model(**enc)
    return seen[0][0]


def _changed(ad, base, crafted) -> set[int]:
    return set((_embedded(ad, base) - _embedded(ad, crafted)).abs().amax(-1).nonzero().flatten().tolist())


def _paint(image, x0, y0, x1, y1):
    out = image.copy()
    out.paste(Image.new("RGB", (x1 - x0, y1 - y0), (250, 10, 10)), (x0, y0))
    return out


def test_the_adapters_are_registered_with_the_text_model_mapped(ad):
    mt = ad.model.config.model_type
    assert adapter_for(mt) is {"idefics3": Idefics3Adapter, "smolvlm": SmolVLMAdapter}[mt]
    ad.check_modules()
    text = ad.model.model.text_model
    assert ad.decoder_layers() == list(text.layers) and ad.final_norm() is text.norm
    assert ad.unembed() is ad.model.lm_head and ad.n_blocks == 4
    assert ad.layer_module(2, "o_proj") is text.layers[2].self_attn.o_proj
    assert ad.tokens_per_view == _side(mt) ** 2


@pytest.mark.parametrize(("size", "want"), TILINGS.items(), ids=[f"{w}x{h}" for w, h in TILINGS])
def test_views_match_the_processors_tiles_and_token_count(ad, size, want):
    side = _side(ad.model.config.model_type)
    rows, cols = want
    ip = ad.processor.image_processor
    info = ip([Image.new("RGB", size, (90, 90, 90))], return_row_col_info=True)
    assert (info["rows"][0][0], info["cols"][0][0]) == (rows, cols) == ad.tile_grid(size)
    enc = _encode(ad, [Image.new("RGB", size, (90, 90, 90))])
    n_views = rows * cols + 1
    assert enc["pixel_values"].shape[1] == n_views
    assert int((enc["input_ids"] == ad.image_token_id).sum()) == n_views * side * side
    (grid,) = ad.image_grids(enc, [size])[0]
    tiles, glob = grid.views
    assert (tiles.name, tiles.rows, tiles.cols) == ("tiles", rows * side, cols * side)
    assert (glob.name, glob.rows, glob.cols) == ("global", side, side)
    assert grid.canonical == 0 and grid.view is tiles
    assert all(v.box == (0.0, 0.0, float(size[0]), float(size[1])) for v in grid.views)
    # separators: every marker, row/col token and newline of the image, and no patch
    ids = enc["input_ids"][0]
    tok = ad.tokenizer
    seps = tok.convert_ids_to_tokens(ids[torch.as_tensor(grid.separators)].tolist())
    assert not (ids[torch.as_tensor(grid.separators)] == ad.image_token_id).any()
    assert bool((ids[torch.as_tensor(grid.patch_index)] == ad.image_token_id).all())
    row_col = [f"<row_{r + 1}_col_{c + 1}>" for r in range(rows) for c in range(cols)]
    assert [t for t in seps if t.startswith("<row_")] == row_col
    assert seps.count("<fake_token_around_image>") == rows * cols + 2
    assert seps.count("<global-img>") == 1
    newline = tok.convert_ids_to_tokens(tok("\n", add_special_tokens=False)["input_ids"])
    assert seps.count(newline[0]) == rows + 1  # one after each tile row, one before the global view
    assert len(seps) == 2 * rows * cols + rows + 1 + 3
    # the global view is last, between <global-img> and the closing marker
    close = int(grid.separators[-1])
    assert glob.token_index.tolist() == list(range(close - side * side, close))
    assert tok.convert_ids_to_tokens(int(ids[close - side * side - 1])) == "<global-img>"
    assert glob.token_index.min() > tiles.token_index.max()


def test_tile_grid_is_the_image_processors_at_the_real_settings():
    """Idefics3-8B (364 px tiles, longest edge 4 x 364) and SmolVLM-256M (512 px, 2048): the
    sizes measured in NOTES.md (2873 / 2197 and 1088 / 832 image tokens), and random sizes
    against the processor's own row/col output."""
    from transformers import Idefics3ImageProcessor, SmolVLMImageProcessor

    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(4, 1200, size=(12, 2))]
    for cls, edge, tile, n in ((Idefics3ImageProcessor, 4 * 364, 364, 169), (SmolVLMImageProcessor, 2048, 512, 64)):
        ip = cls(size={"longest_edge": edge}, max_image_size={"longest_edge": tile})
        assert [(r * c + 1) * n for r, c in (tile_grid(ip, (336, 336)), tile_grid(ip, (280, 168)))] == {
            364: [2873, 2197],
            512: [1088, 832],
        }[tile]
        for w, h in sizes:
            info = ip([Image.new("RGB", (w, h))], return_row_col_info=True)
            assert tile_grid(ip, (w, h)) == (info["rows"][0][0], info["cols"][0][0]), (cls.__name__, w, h)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": {"longest_edge": 300}, "max_image_size": {"longest_edge": 128}},  # not a multiple of the tile
        {"do_resize": False, "max_image_size": {"longest_edge": 128}},
        {"size": {"height": 200, "width": 330}, "max_image_size": {"longest_edge": 128}},
        {"size": {"longest_edge": 128}, "max_image_size": {"longest_edge": 128}},  # never tiles
        {"do_image_splitting": False, "max_image_size": {"longest_edge": 128}},
    ],
)
def test_tile_grid_follows_every_resize_setting(kwargs):
    from transformers import Idefics3ImageProcessor

    ip = Idefics3ImageProcessor(**kwargs)
    rng = np.random.default_rng(1)
    for w, h in [(100, 100), (129, 40), (40, 129), *((int(w), int(h)) for w, h in rng.integers(4, 600, size=(30, 2)))]:
        info = ip([Image.new("RGB", (w, h))], return_row_col_info=True)
        assert tile_grid(ip, (w, h)) == (info["rows"][0][0], info["cols"][0][0]), (kwargs, w, h)


def _cases():
    # (family, exact size (no resampling of the tiles), tile (r, c), cell (i, j))
    out = []
    for mt in FAMILIES:
        t, s = _tile(mt), _side(mt)
        out += [
            (mt, (2 * t, 2 * t), (0, 0), (0, 0)),
            (mt, (2 * t, 2 * t), (0, 1), (1, s - 1)),
            (mt, (2 * t, 2 * t), (1, 0), (s - 1, 2)),
            (mt, (2 * t, 2 * t), (1, 1), (2, 1)),
            (mt, (2 * t, t), (0, 1), (s - 1, 0)),  # wide: 1 x 2 tiles
            (mt, (t, 2 * t), (1, 0), (0, s - 1)),  # tall: 2 x 1 tiles
        ]
    return out


@pytest.mark.parametrize(("mt", "size", "tile", "cell"), _cases())
def test_the_stitched_grid_is_row_major_over_the_image(mt, size, tile, cell):
    """An image of exactly rows x cols tiles (no resampling): painting the middle of cell (i, j)
    of tile (r, c) changes the stitched grid's token at (r * side + i, c * side + j), no other
    tile token, and otherwise only the global view's token whose cell holds the paint."""
    model, processor = build_tiny(mt, seed=0)
    ad = adapter_for(mt)(model=model, processor=processor, path=mt)
    family(mt).make_vision_local(ad.model)
    side, px = _side(mt), _tile(mt) // _side(mt)
    (r, c), (i, j) = tile, cell
    base = Image.new("RGB", size, (128, 128, 128))
    x0, y0 = c * _tile(mt) + j * px + px // 4, r * _tile(mt) + i * px + px // 4
    changed = _changed(ad, base, _paint(base, x0, y0, x0 + px // 2, y0 + px // 2))
    (grid,) = ad.image_grids(_encode(ad, [base]), [size])[0]
    tiles, glob = grid.views
    assert (tiles.rows, tiles.cols) == (size[1] // _tile(mt) * side, size[0] // _tile(mt) * side)
    want = int(tiles.token_index[(r * side + i) * tiles.cols + c * side + j])
    assert changed & set(tiles.token_index.tolist()) == {want}
    gi, gj = int((y0 + px / 4) / size[1] * side), int((x0 + px / 4) / size[0] * side)
    assert changed - {want} == {int(glob.token_index[gi * side + gj])}


@pytest.mark.parametrize("mt", FAMILIES)
def test_the_global_view_is_row_major_over_the_whole_image(mt):
    model, processor = build_tiny(mt, seed=0)
    ad = adapter_for(mt)(model=model, processor=processor, path=mt)
    family(mt).make_vision_local(ad.model)
    side = _side(mt)
    size = (300, 280)  # 2 x 2 tiles; a global cell is 300 / side x 280 / side px
    base = Image.new("RGB", size, (128, 128, 128))
    cw, ch = size[0] / side, size[1] / side
    gi, gj = side - 1, 1
    x0, y0 = round(gj * cw + cw / 4), round(gi * ch + ch / 4)
    changed = _changed(ad, base, _paint(base, x0, y0, round(x0 + cw / 2), round(y0 + ch / 2)))
    (grid,) = ad.image_grids(_encode(ad, [base]), [size])[0]
    glob = grid.views[1]
    assert changed & set(glob.token_index.tolist()) == {int(glob.token_index[gi * side + gj])}


@pytest.mark.parametrize("mt", FAMILIES)
@pytest.mark.parametrize("setting", ["no_splitting", "one_tile_edge"])
def test_an_image_without_tiles_is_its_global_view(mt, setting):
    """With splitting off, or a longest edge of one tile, the image is the global view alone
    (canonical), wrapped in its three markers; the model still generates from it."""
    model, processor = build_tiny(mt, seed=0)
    ip = processor.image_processor
    if setting == "no_splitting":
        ip.do_image_splitting = False
    else:
        ip.size = {"longest_edge": _tile(mt)}
    ad = adapter_for(mt)(model=model, processor=processor, path=mt)
    side = _side(mt)
    sizes = [(240, 100), (40, 30)]
    enc = _encode(ad, [Image.new("RGB", s, (90, 90, 90)) for s in sizes])
    for b, (grid,) in enumerate(ad.image_grids(enc, sizes)):
        assert [v.name for v in grid.views] == ["global"] and (grid.rows, grid.cols) == (side, side)
        ids = enc["input_ids"][b]
        seps = ad.tokenizer.convert_ids_to_tokens(ids[torch.as_tensor(grid.separators)].tolist())
        assert seps == ["<fake_token_around_image>", "<global-img>", "<fake_token_around_image>"]
        assert grid.token_index.tolist() == list(range(int(grid.separators[1]) + 1, int(grid.separators[2])))
    with torch.no_grad():
        out = ad.model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id)
    assert out.shape == (2, enc["input_ids"].shape[1] + 2)


def test_batches_keep_image_order_across_padding(ad):
    sizes = [(240, 100), (300, 280)]  # 1 x 2 and 2 x 2 tiles: the first row is left-padded
    enc = _encode(ad, [Image.new("RGB", s, (128, 128, 128)) for s in sizes])
    rows = ad.image_grids(enc, sizes)
    side = _side(ad.model.config.model_type)
    assert [(g.rows, g.cols) for (g,) in rows] == [(side, 2 * side), (2 * side, 2 * side)]
    assert int((enc["attention_mask"][0] == 0).sum()) > 0
    for b, (grid,) in enumerate(rows):
        ids = enc["input_ids"][b]
        assert bool((ids[torch.as_tensor(grid.patch_index)] == ad.image_token_id).all())
        assert int((ids == ad.image_token_id).sum()) == len(grid.patch_index)
    # the batch pads the first row's missing tile with zeros, which the model drops: the
    # greedy answers are each image's own
    images = [Image.fromarray(np.random.default_rng(b).integers(0, 255, (h, w, 3), dtype=np.uint8))
              for b, (w, h) in enumerate(sizes)]  # fmt: skip
    prompts = [ad.prompt("How many objects are in the image?")] * 2
    pad = ad.tokenizer.pad_token_id
    with torch.no_grad():
        enc = ad.model_inputs(images, prompts)
        batched = ad.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=pad)
        for b in range(2):
            one = ad.model_inputs(images[b : b + 1], prompts[b : b + 1])
            alone = ad.model.generate(**one, max_new_tokens=4, do_sample=False, pad_token_id=pad)
            assert batched[b, -4:].tolist() == alone[0, -4:].tolist()


def test_a_count_that_does_not_match_the_tiling_is_an_error(ad):
    mt, n = ad.model.config.model_type, _side(ad.model.config.model_type) ** 2
    enc = _encode(ad, [Image.new("RGB", (300, 280))])  # 2 x 2 tiles
    with pytest.raises(ValueError, match=rf"{mt}: the prompts hold {5 * n} image tokens.* gives {3 * n}"):
        ad.image_grids(enc, [(240, 100)])  # told the wrong size: 1 x 2 tiles


def test_a_layout_that_is_not_the_processors_is_an_error(ad):
    mt = ad.model.config.model_type
    enc = _encode(ad, [Image.new("RGB", (300, 280))])
    ids = enc["input_ids"].clone()
    pos = int((ids[0] == ad.tokenizer.convert_tokens_to_ids("<row_1_col_2>")).nonzero()[0])
    ids[0, pos] = ad.tokenizer.convert_tokens_to_ids("<row_2_col_1>")  # tiles swapped
    with pytest.raises(ValueError, match=rf"{mt}: image 0 \(2x2 tiles\) is not laid out"):
        ad.image_grids({**enc, "input_ids": ids}, [(300, 280)])
