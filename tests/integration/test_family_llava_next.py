"""LLaVA-NeXT and LLaVA-OneVision ("anyres"): the base view + stitched tile grid + newline slots
that the adapters compute, against the processor's image-token counts, the model's own packed
image features and decoder input, transformers' geometry helpers, and a crafted patch with a
local vision tower (tiny random-weight models of the real classes, ``vrp.toys.tiny``)."""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.models import adapter_for
from vrp.models.llava_next import best_fit, downsampled, fitted_size, unpad
from vrp.models.sites import hooks
from vrp.toys.tiny import build_tiny, family

FAMILIES = ("llava_next", "llava_onevision")
PROMPT = "Describe the image."

# (width, height) -> the tiles view (rows, cols) the tiny models show, worked out by hand from
# the pinpoints (96 px tiles of 4 x 4 cells): None = base view only.
SHAPES = {
    "llava_next": {
        (288, 100): (2, 8),  # wide: 1 x 2 tiles, 4 x 8 cells, unpad keeps floor(100 * 8 / 288) = 2 rows
        (100, 288): (8, 2),  # tall
        (192, 192): (8, 8),  # square: 2 x 2 tiles, nothing to unpad
        (96, 96): (4, 4),  # square, but the best fit is 2 x 1 tiles (192 x 96): half of it unpadded
        (20, 12): (2, 4),  # tiny: upscaled into 2 x 1 tiles, 2 of 8 rows kept
        (600, 500): (6, 8),  # large: 2 x 2 tiles
        (1000, 90): None,  # so wide that unpad keeps no row: base only, no newline
        (90, 1000): None,  # so tall that unpad keeps no column: base only, then 8 newlines
    },
    "llava_onevision": {
        (200, 100): (6, 12),  # wide: 2 x 3 tiles, 8 x 12 cells -> 6 x 12
        (100, 200): (12, 6),  # tall
        (96, 96): (4, 4),  # square: 1 x 1 tile
        (20, 12): (2, 4),
        # anyres_max_4 downsampling of grids above 4 * 1.1**2 tiles' worth of cells:
        (288, 288): (8, 8),  # 3 x 3 tiles, 12 x 12 -> ratio 1.5 -> 8 x 8
        (280, 240): (7, 8),  # 12 x 12 -> unpad 10 x 12 -> ratio 1.369 -> 7 x 8
        (240, 280): (8, 7),
        (600, 500): (7, 8),
        (3000, 40): None,
    },
}
CASES = [(mt, size, shape) for mt in FAMILIES for size, shape in SHAPES[mt].items()]


@cache
def _adapter(model_type: str, local: bool = False):
    model, processor = build_tiny(model_type, seed=0)
    if local:
        family(model_type).make_vision_local(model)
    return adapter_for(model_type)(model=model, processor=processor, path=model_type)


def _image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8))


def _features(ad, enc) -> list[int]:
    """Length of each image's packed features as the model builds them (its own oracle)."""
    extra = {"batch_num_images": enc["batch_num_images"]} if "batch_num_images" in enc else {}
    with torch.no_grad():
        out = ad.model.model.get_image_features(
            pixel_values=enc["pixel_values"], image_sizes=enc["image_sizes"], **extra
        )
    return [int(f.shape[0]) for f in out.pooler_output]


def _decoder_input(ad, images, prompts):
    seen = []
    enc = ad.encode(images, prompts, padding_side="left")
    with torch.no_grad(), hooks(ad, {"embed": lambda h: seen.append(h.detach().clone())}):
        ad.model(**enc)
    return seen[0], enc


@pytest.mark.parametrize(("model_type", "size", "shape"), CASES, ids=[f"{m}-{w}x{h}" for m, (w, h), _ in CASES])
def test_base_plus_tiles_plus_newlines_is_the_processors_token_count(model_type, size, shape):
    ad = _adapter(model_type)
    enc = ad.encode([_image(size)], [ad.prompt(PROMPT)])
    n_prompt = int((enc["input_ids"] == ad.image_token_id).sum())
    ((grid,),) = ad.image_grids(enc, [size])
    base = grid.views[0]
    assert (base.name, base.rows, base.cols) == ("base", 4, 4)
    if shape is None:
        assert len(grid.views) == 1 and grid.view is base
        tiles = 0
    else:
        assert [v.name for v in grid.views] == ["base", "tiles"] and grid.view.name == "tiles"
        assert (grid.view.rows, grid.view.cols) == shape
        tiles = shape[0] * shape[1]
        assert len(grid.separators) == shape[0]  # one newline per row
    assert 16 + tiles + len(grid.separators) == n_prompt == _features(ad, enc)[0]
    # every image token is a patch of one view or a separator, once
    every = np.sort(np.concatenate([grid.patch_index, grid.separators]))
    np.testing.assert_array_equal(every, (enc["input_ids"][0] == ad.image_token_id).nonzero().flatten().numpy())


@pytest.mark.parametrize("model_type", FAMILIES)
def test_newline_slots_are_separators_holding_the_learned_newline(model_type):
    """In a left-padded batch of a wide and a tall image, the positions after each tile row are
    the separators, and the decoder's input holds ``model.image_newline`` there and nowhere else."""
    ad = _adapter(model_type)
    sizes = list(family(model_type).sizes)
    e, enc = _decoder_input(
        ad, [_image(s, i) for i, s in enumerate(sizes)], [ad.prompt(PROMPT), ad.prompt("How many?")]
    )
    grids = ad.image_grids(enc, sizes)
    newline = ad.image_newline.detach()
    for b, (grid,) in enumerate(grids):
        tiles = grid.view
        last_of_row = tiles.token_index.reshape(tiles.rows, tiles.cols)[:, -1]
        np.testing.assert_array_equal(grid.separators, last_of_row + 1)
        assert torch.equal(e[b, torch.as_tensor(grid.separators)], newline.expand(len(grid.separators), -1))
        holds = (e[b] == newline).all(-1).nonzero().flatten().numpy()
        np.testing.assert_array_equal(holds, grid.separators)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_the_family_sizes_are_multi_tile_with_padding_that_unpad_removes(model_type):
    """The shared harness (tests/integration/test_families.py) runs its crafted-patch and batch
    tests on ``family(...).sizes``: a wide and a tall image, each of several tiles, each with
    padding rows / columns that unpad removes."""
    ad = _adapter(model_type)
    tile, side = 96, 4
    orientations = set()
    for w, h in family(model_type).sizes:
        th, tw = best_fit(h, w, ad.model.config.image_grid_pinpoints)
        assert (th // tile) * (tw // tile) >= 2
        _, rows, _, cols = unpad(h, w, (th // tile * side, tw // tile * side))
        assert rows * cols < (th // tile * side) * (tw // tile * side)
        orientations.add(w > h)
    assert orientations == {True, False}


def _painted(ad, size, squares):
    """Paint ``squares`` (each a normalized box of the canonical tiles view) red on a grey image
    of ``size`` and return (grid, the prompt positions whose decoder input changed, the
    positions allowed to change: cells of any view that read a painted pixel). A cell of a
    downsampled OneVision grid reads (bilinearly) the up to 2 x 2 unpadded cells around its
    centre, which may reach past its own box."""
    w, h = size
    base = Image.new("RGB", (w, h), (128, 128, 128))
    e0, enc = _decoder_input(ad, [base], [ad.prompt(PROMPT)])
    ((grid,),) = ad.image_grids(enc, [size])
    tiles = grid.view
    crafted = base.copy()
    painted = [tiles.to_image(sq) for sq in squares]
    for x0, y0, x1, y1 in painted:
        crafted.paste(
            Image.new("RGB", (max(1, round(x1 - x0)), max(1, round(y1 - y0))), (250, 10, 10)), (round(x0), round(y0))
        )
    e1, _ = _decoder_input(ad, [crafted], [ad.prompt(PROMPT)])
    changed = set((e0 - e1)[0].abs().amax(-1).nonzero().flatten().tolist())
    # the unpadded grid the tiles view was (perhaps) downsampled from: the same box
    th, tw = best_fit(h, w, ad.model.config.image_grid_pinpoints)
    _, rows_in, _, cols_in = unpad(h, w, (th // 96 * 4, tw // 96 * 4))
    kept = downsampled(rows_in, cols_in, 4, 4) if ad.family == "llava_onevision" else (rows_in, cols_in)
    assert (tiles.rows, tiles.cols) == kept == SHAPES[ad.family][size]
    allowed = set()
    for v in grid.views:
        for cell in range(v.rows * v.cols):
            cy, cx = divmod(cell, v.cols)
            if v is tiles:
                (a, b), (p, q) = _bilinear_taps(v.rows, rows_in, cy), _bilinear_taps(v.cols, cols_in, cx)
                box = v.to_image((p / cols_in, a / rows_in, q / cols_in, b / rows_in))
            else:
                box = v.to_image((cx / v.cols, cy / v.rows, (cx + 1) / v.cols, (cy + 1) / v.rows))
            if any(box[0] < x1 and box[2] > x0 and box[1] < y1 and box[3] > y0 for x0, y0, x1, y1 in painted):
                allowed.add(int(v.token_index[cell]))
    return grid, changed, allowed


def _bilinear_taps(n_out: int, n_in: int, i: int) -> tuple[int, int]:
    """The input cells ``[first, last + 1)`` that bilinear resizing (align_corners False) reads
    for output cell ``i``."""
    src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    first = math.floor(src)
    return first, min(first + (2 if src > first else 1), n_in)


CRAFTED = [("llava_next", (192, 192)), ("llava_next", (288, 100)), ("llava_next", (100, 288)),
           ("llava_onevision", (200, 100)), ("llava_onevision", (100, 200)), ("llava_onevision", (288, 288)),
           ("llava_onevision", (280, 240)), ("llava_onevision", (240, 280))]  # fmt: skip
CRAFTED_IDS = [f"{m}-{w}x{h}" for m, (w, h) in CRAFTED]


@pytest.mark.parametrize(("model_type", "size"), CRAFTED, ids=CRAFTED_IDS)
def test_a_crafted_patch_changes_exactly_the_cells_that_read_it(model_type, size):
    """The harness's crafted-patch test on more multi-tile images, downsampled grids included:
    the middle half of one tile cell."""
    ad = _adapter(model_type, local=True)
    rows, cols = SHAPES[model_type][size]
    r, c = rows // 2, cols // 3
    grid, changed, allowed = _painted(
        ad, size, [((c + 0.25) / cols, (r + 0.25) / rows, (c + 0.75) / cols, (r + 0.75) / rows)]
    )
    assert int(grid.view.token_index[r * cols + c]) in changed
    assert changed <= allowed, sorted(changed - allowed)


@pytest.mark.parametrize(("model_type", "size"), CRAFTED, ids=CRAFTED_IDS)
def test_the_tiles_box_reaches_the_corners_of_the_unpadded_grid(model_type, size):
    """A small square just inside each outer corner of the tiles view changes that corner's cell:
    the box is where unpad cut the grid, not the whole image (off by a third of a cell, the
    middle-of-a-cell test above would not see it)."""
    ad = _adapter(model_type, local=True)
    rows, cols = SHAPES[model_type][size]
    lo, hi = 0.05, 0.2  # of a cell, from the corner
    squares, corners = [], []
    for r, c in ((0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)):
        y = (r + lo, r + hi) if r == 0 else (r + 1 - hi, r + 1 - lo)
        x = (c + lo, c + hi) if c == 0 else (c + 1 - hi, c + 1 - lo)
        squares.append((x[0] / cols, y[0] / rows, x[1] / cols, y[1] / rows))
        corners.append(r * cols + c)
    grid, changed, allowed = _painted(ad, size, squares)
    assert {int(grid.view.token_index[k]) for k in corners} <= changed
    assert changed <= allowed, sorted(changed - allowed)


def test_onevision_downsamples_large_grids_to_the_exact_shape():
    """anyres_max_N: ratio = sqrt(cells / (N * side**2)); above 1.1 each side becomes
    floor(side / ratio); one newline per row of the downsampled grid."""
    assert downsampled(12, 12, 4, 4) == (8, 8)
    assert downsampled(10, 12, 4, 4) == (7, 8)
    assert downsampled(8, 8, 4, 4) == (8, 8)  # ratio sqrt(64 / 64) = 1: kept
    assert downsampled(8, 12, 4, 4) == (6, 9)  # ratio 1.2247: 8 // 1.2247 = 6, 12 // 1.2247 = 9
    # the real anyres_max_9 with SigLIP's 27 x 27: a 6 x 6 tile grid (162 x 162 cells) -> 81 x 81
    assert downsampled(162, 162, 27, 9) == (81, 81)
    ad = _adapter("llava_onevision")
    enc = ad.encode([_image((288, 192))], [ad.prompt(PROMPT)])
    ((grid,),) = ad.image_grids(enc, [(288, 192)])
    assert (grid.view.rows, grid.view.cols) == (6, 9)  # 2 x 3 tiles: 8 x 12 cells, nothing to unpad
    assert 16 + 6 * 9 + 6 == int((enc["input_ids"] == ad.image_token_id).sum()) == _features(ad, enc)[0]


def test_several_images_in_one_prompt():
    """LLaVA-NeXT tiles every image; OneVision tiles an image that is alone in its prompt, and
    shows each image of a multi-image prompt as its base view (padded to a square) + 1 newline."""
    sizes = [(200, 100), (100, 200)]
    ims = [_image(s, i) for i, s in enumerate(sizes)]
    for model_type in FAMILIES:
        ad = _adapter(model_type)
        prompt = ad.prompt(PROMPT).replace("<image>", "<image> <image>", 1)
        nested = [ims] if model_type == "llava_onevision" else ims
        e, enc = _decoder_input(ad, nested, [prompt])
        (grids,) = ad.image_grids(enc, sizes)
        assert len(grids) == 2 and sum(_features(ad, enc)) == int((enc["input_ids"] == ad.image_token_id).sum())
        for g in grids:
            assert torch.equal(
                e[0, torch.as_tensor(g.separators)], ad.image_newline.detach().expand(len(g.separators), -1)
            )
        if model_type == "llava_next":
            assert all([v.name for v in g.views] == ["base", "tiles"] for g in grids)
        else:
            assert all(len(g.views) == 1 and len(g.separators) == 1 for g in grids)
            assert grids[0].view.box == (0.0, -50.0, 200.0, 150.0)  # the padded square around 200 x 100
            assert grids[1].view.box == (-50.0, 0.0, 150.0, 200.0)
            # the same two images, each in its own prompt: tiled
            _, enc = _decoder_input(ad, ims, [ad.prompt(PROMPT)] * 2)
            assert [[v.name for v in g.views] for (g,) in ad.image_grids(enc, sizes)] == [["base", "tiles"]] * 2


def test_boxes():
    """Base: the whole image (a plain resize to S x S). Tiles: the unpadded grid's pixels, the
    whole image when it fills whole cells, else cut by unpad's rounding."""
    ad = _adapter("llava_next")
    lay = ad.image_layout(192, 192)
    assert lay.base_box == lay.tiles_box == (0.0, 0.0, 192.0, 192.0)
    # 288 x 100 into 96 x 192: resized to 192 x 67, pasted 14 px down; rows 1..2 of 4 (24 px) kept
    lay = ad.image_layout(100, 288)
    assert lay.base_box == (0.0, 0.0, 288.0, 100.0)
    np.testing.assert_allclose(lay.tiles_box, (0.0, 10 * 100 / 67, 288.0, 58 * 100 / 67))


def test_real_checkpoint_geometry():
    """The released checkpoints' settings (config defaults and the llava-hf image processor
    sizes) give the counts measured with the real processors (shared/NOTES.md: LLaVA-NeXT 1176
    / 1560, OneVision 1485 / 1205 for 336 x 336 / 280 x 168), and SigLIP's 27 patches of 14 px
    see 378 of the base image's 384 px."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextImageProcessor,
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
    )

    ip = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    nxt = adapter_for("llava_next")(SimpleNamespace(config=LlavaNextConfig()), SimpleNamespace(image_processor=ip), "x")
    ov = adapter_for("llava_onevision")(
        SimpleNamespace(config=LlavaOnevisionConfig()),
        SimpleNamespace(image_processor=LlavaOnevisionImageProcessor()),
        "x",
    )
    assert [nxt.image_layout(h, w).n_tokens for w, h in ((336, 336), (280, 168))] == [1176, 1560]
    assert [ov.image_layout(h, w).n_tokens for w, h in ((336, 336), (280, 168))] == [1485, 1205]
    assert nxt.image_layout(168, 280).base_box == (0.0, 0.0, 280.0, 168.0)
    np.testing.assert_allclose(ov.image_layout(168, 280).base_box, (0, 0, 280 * 378 / 384, 168 * 378 / 384))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_geometry_agrees_with_transformers_on_random_sizes(model_type):
    """best_fit, fitted_size and unpad against transformers' own helpers, and the whole layout
    against the processor's token count, on 300 random sizes."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    ad = _adapter(model_type)
    pins = ad.model.config.image_grid_pinpoints
    rng = np.random.default_rng(1)
    sizes = [(int(w), int(h)) for w, h in rng.integers(8, 900, size=(300, 2))]
    want = ad.processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in sizes]).num_image_tokens
    for (w, h), n in zip(sizes, want, strict=True):
        target = best_fit(h, w, pins)
        assert target == tuple(select_best_resolution((h, w), pins))
        fake = np.zeros((3, h, w))
        assert fitted_size(h, w, target) == get_patch_output_size(fake, target, ChannelDimension.FIRST)
        grid = (target[0] // 96 * 4, target[1] // 96 * 4)
        _, rows, _, cols = unpad(h, w, grid)
        assert (rows, cols) == tuple(unpad_image(torch.zeros(1, *grid), (h, w)).shape[1:])
        assert ad.image_layout(h, w).n_tokens == n, (w, h)


def test_a_count_that_does_not_match_is_an_error_naming_both():
    for model_type, change in (("llava_next", {"image_grid_pinpoints": [[96, 96]]}),
                               ("llava_onevision", {"vision_aspect_ratio": "anyres_max_9"})):  # fmt: skip
        model, processor = build_tiny(model_type, seed=0)
        for k, v in change.items():
            setattr(model.config, k, v)
        ad = adapter_for(model_type)(model=model, processor=processor, path=model_type)
        size = (288, 288)
        enc = ad.encode([_image(size)], [ad.prompt(PROMPT)])
        n = int((enc["input_ids"] == ad.image_token_id).sum())
        with pytest.raises(ValueError, match=rf"{model_type}: the processor put {n} image tokens.* gives \d+"):
            ad.image_grids(enc, [size])
    ad = _adapter("llava_next")
    enc = ad.encode([_image((288, 100))], [ad.prompt(PROMPT)])
    with pytest.raises(ValueError, match="image 0 is 100x288 but the processor saw 288x100"):
        ad.image_grids(enc, [(100, 288)])
