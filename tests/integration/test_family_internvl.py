"""InternVL's tiling and views on the tiny model (``vrp.toys.tiny.internvl``): the recomputed
tiling against the processor's own output, the stitched tile grid's token order against a
crafted patch through a local vision tower, and the thumbnail last."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.models import adapter_for
from vrp.models.internvl import tile_grid
from vrp.models.sites import hooks
from vrp.toys.tiny import build_tiny, family
from vrp.toys.tiny.internvl import MAX_TILES, MIN_TILES, TILE

SIDE = 4  # tokens per tile side in the tiny model (48 px tiles, patch 6, pixel shuffle 0.5)
# (width, height) -> (cols, rows, thumbnail)
TILINGS = {
    (48, 48): (1, 1, False),  # square, small: one tile
    (96, 96): (2, 2, True),  # square, large: the tie with 2x2 goes to the larger grid
    (150, 100): (3, 2, True),  # wide
    (70, 105): (2, 3, True),  # tall
    (60, 52): (1, 1, False),  # near-square: one tile, squashed
    (20, 12): (3, 2, True),  # tiny: upscaled into 6 tiles
    (400, 40): (6, 1, True),  # very wide: capped by max_patches = 6
    (30, 300): (1, 6, True),  # very tall: capped
}


@pytest.fixture(scope="module")
def ad():
    model, processor = build_tiny("internvl", seed=0)
    ad = adapter_for("internvl")(model=model, processor=processor, path="internvl")
    family("internvl").make_vision_local(ad.model)
    return ad


def _encode(ad, images):
    return ad.encode(images, [ad.prompt("Describe the image.")] * len(images))


def _embedded(ad, image):
    """The decoder's input embeddings [seq, d] for one image, and the processor's output."""
    seen = []
    enc = _encode(ad, [image])
    with torch.no_grad(), hooks(ad, {"embed": lambda h: seen.append(h.detach().clone())}):
        ad.model(**enc)
    return seen[0][0], enc


def _changed(ad, base, crafted) -> set[int]:
    e0, _ = _embedded(ad, base)
    e1, _ = _embedded(ad, crafted)
    return set((e0 - e1).abs().amax(-1).nonzero().flatten().tolist())


def _paint(image, x0, y0, x1, y1):
    out = image.copy()
    out.paste(Image.new("RGB", (x1 - x0, y1 - y0), (250, 10, 10)), (x0, y0))
    return out


@pytest.mark.parametrize(("size", "want"), TILINGS.items(), ids=[f"{w}x{h}" for w, h in TILINGS])
def test_the_recomputed_tiling_is_the_processors(ad, size, want):
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    w, h = size
    cols, rows, thumb = ad.tiling(size)
    assert (cols, rows, thumb) == want
    assert (cols, rows) == get_optimal_tiled_canvas((h, w), (TILE, TILE), MIN_TILES, MAX_TILES)
    enc = _encode(ad, [Image.new("RGB", size, (90, 90, 90))])
    n_views = cols * rows + thumb
    assert int((enc["input_ids"] == ad.image_token_id).sum()) == n_views * SIDE * SIDE
    assert enc["pixel_values"].shape[0] == n_views
    (grid,) = ad.image_grids(enc, [size])[0]
    assert [v.name for v in grid.views] == (["tiles", "thumbnail"] if thumb else ["tiles"])
    assert (grid.rows, grid.cols) == (rows * SIDE, cols * SIDE) and grid.view.name == "tiles"
    assert all(v.box == (0.0, 0.0, float(w), float(h)) for v in grid.views)
    ids = enc["input_ids"][0]
    assert ids[grid.separators].tolist() == [ad.processor.start_image_token_id, ad.processor.end_image_token_id]


def test_tile_grid_matches_the_image_processor_at_the_real_sizes():
    """448 px tiles, 1..12 tiles: every aspect ratio and scale agrees with transformers'
    arithmetic, and the sizes measured in NOTES.md give 1 tile / 3x2 tiles + thumbnail."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    rng = np.random.default_rng(0)
    sizes = [(336, 336), (280, 168), *((int(w), int(h)) for w, h in rng.integers(8, 4000, size=(300, 2)))]
    for w, h in sizes:
        assert tile_grid((w, h), (448, 448), 1, 12) == get_optimal_tiled_canvas((h, w), (448, 448), 1, 12), (w, h)
    assert tile_grid((336, 336), (448, 448), 1, 12) == (1, 1)
    assert tile_grid((280, 168), (448, 448), 1, 12) == (3, 2)


def test_a_count_that_does_not_match_the_tiling_is_an_error(ad):
    enc = _encode(ad, [Image.new("RGB", (150, 100))])
    with pytest.raises(ValueError, match=r"internvl: .*has 112 <IMG_CONTEXT> tokens.* gives 16"):
        ad.image_grids(enc, [(60, 52)])  # told the wrong size: its tiling is one tile


@pytest.mark.parametrize(("r", "c", "i", "j"), [(0, 0, 0, 0), (0, 2, 1, 3), (1, 0, 3, 2), (1, 1, 2, 1)])
def test_the_stitched_grid_is_row_major_over_the_image(ad, r, c, i, j):
    """144 x 96 is exactly 3 x 2 tiles of 48 px (no squash): painting the middle of cell (i, j)
    of tile (r, c) changes the stitched grid's token at (r * side + i, c * side + j) and no other
    tile token."""
    size, cell = (144, 96), TILE // SIDE
    base = Image.new("RGB", size, (128, 128, 128))
    x0, y0 = c * TILE + j * cell + 3, r * TILE + i * cell + 3
    changed = _changed(ad, base, _paint(base, x0, y0, x0 + cell - 6, y0 + cell - 6))
    (grid,) = ad.image_grids(_encode(ad, [base]), [size])[0]
    tiles, thumb = grid.views
    assert (tiles.rows, tiles.cols) == (2 * SIDE, 3 * SIDE)
    want = int(tiles.token_index[(r * SIDE + i) * tiles.cols + c * SIDE + j])
    assert changed & set(tiles.token_index.tolist()) == {want}
    assert changed - {want} <= set(thumb.token_index.tolist())  # the rest: the thumbnail


def test_the_thumbnail_is_last_and_covers_the_whole_image(ad):
    """The thumbnail's tokens are the last of the image, right before ``</img>``, a SIDE x SIDE
    grid of the whole (squashed) image: a patch in the middle of its cell (1, 2) changes its
    token there."""
    size = (144, 96)  # thumbnail cells are 36 x 24 px of the original
    base = Image.new("RGB", size, (128, 128, 128))
    (grid,) = ad.image_grids(_encode(ad, [base]), [size])[0]
    thumb = grid.views[-1]
    close = int(grid.separators[-1])
    assert thumb.name == "thumbnail" and (thumb.rows, thumb.cols) == (SIDE, SIDE)
    assert thumb.token_index.tolist() == list(range(close - SIDE * SIDE, close))
    assert thumb.token_index.min() > grid.views[0].token_index.max()
    cw, ch = size[0] // SIDE, size[1] // SIDE
    changed = _changed(ad, base, _paint(base, 2 * cw + 12, 1 * ch + 8, 3 * cw - 12, 2 * ch - 8))
    assert changed & set(thumb.token_index.tolist()) == {int(thumb.token_index[1 * SIDE + 2])}


def test_a_single_tile_image_has_one_view_and_batches_keep_image_order(ad):
    sizes = [(60, 52), (150, 100)]
    images = [Image.new("RGB", s, (128, 128, 128)) for s in sizes]
    enc = _encode(ad, images)  # left-padded: the one-tile row is shorter
    rows = ad.image_grids(enc, sizes)
    single, multi = rows[0][0], rows[1][0]
    assert [v.name for v in single.views] == ["tiles"] and (single.rows, single.cols) == (SIDE, SIDE)
    assert [v.name for v in multi.views] == ["tiles", "thumbnail"]
    for b, grid in enumerate((single, multi)):
        ids = enc["input_ids"][b]
        assert bool((ids[torch.as_tensor(grid.patch_index)] == ad.image_token_id).all())
        assert int((ids == ad.image_token_id).sum()) == len(grid.patch_index)
