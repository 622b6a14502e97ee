"""InternVL 3 family (transformers' native ``InternVLForConditionalGeneration``): InternViT +
pixel-shuffle MLP projector + a Qwen2 / Qwen3 decoder.

**Tiling** ("dynamic preprocessing", ``GotOcr2ImageProcessor`` with ``crop_to_patches``): among
the tile grids of ``min_patches``..``max_patches`` tiles, the one whose aspect ratio
(cols / rows) is closest to the image's (ties go to the larger grid while the image's area is
more than half the grid's); the image is squashed to cols x tile by rows x tile pixels and cut
into tiles, row-major; when there is more than one tile a thumbnail (the whole image squashed
to one tile) follows. Each tile is ``(tile / patch * downsample_ratio)^2`` tokens after the
pixel shuffle (16 x 16 = 256 at the real 448 px / patch 14 / 0.5), row-major.

**Prompt layout**: ``<img>`` + N ``<IMG_CONTEXT>`` + ``</img>`` per image, contiguous, with no
separators between tiles: tiles row-major, then the thumbnail. The processor drops the
tile counts (``num_patches``), so :meth:`InternVLAdapter.image_grids` recomputes the tiling
from the image processor's settings and the image size, and checks it against the number of
context tokens and of ``pixel_values`` (a mismatch is an error naming both numbers).

**Views**: ``tiles``, the tiles stitched into one (rows x side) x (cols x side) grid (box: the
whole image, as the squashed resize fills the tile grid), canonical; ``thumbnail``, a side x
side grid of the whole image, last. A single-tile image has only the ``tiles`` view (its one
tile is the whole image). ``<img>`` and ``</img>`` are the image's separators.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, ClassVar

import numpy as np

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register, size_field
from vrp.models.grids import ImageGrid, View, full_box


@cache
def _arrangements(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Every (cols, rows) with min_tiles <= cols * rows <= max_tiles, by number of tiles
    (stable: cols-major within a count, as the image processor enumerates them)."""
    grids = [
        (c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if min_tiles <= c * r <= max_tiles
    ]
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def tile_grid(image_size: tuple[int, int], tile: tuple[int, int], min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(cols, rows) of the tiles InternVL's dynamic preprocessing cuts an image into.

    Args:
        image_size: ``(width, height)`` of the original image.
        tile: ``(width, height)`` of one tile in pixels.
        min_tiles, max_tiles: the image processor's ``min_patches`` / ``max_patches``.
    """
    w, h = image_size
    tw, th = tile
    aspect, area = w / h, w * h
    best, best_diff = (1, 1), float("inf")
    for cols, rows in _arrangements(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tw * th * cols * rows:
            best = (cols, rows)  # a tie: the larger grid while the image fills half of it
    return best


@register
class InternVLAdapter(ModelAdapter):
    model_types = ("internvl",)
    family = "internvl"
    canonical_view = (
        "the tiles stitched into one grid ('tiles': rows x cols tiles of side x side tokens each, "
        "row-major over the squashed image); the thumbnail ('thumbnail', after the tiles of a "
        "multi-tile image) is also recorded"
    )
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    # ---- tiling --------------------------------------------------------------------

    def _images_settings(self) -> dict[str, Any]:
        """The image processor's settings as the processor calls it: the processor's own
        defaults (``crop_to_patches=True`` for InternVL) override the image processor's."""
        ip = self.processor.image_processor
        merged = self.processor._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs)["images_kwargs"]
        size = merged.get("size", ip.size)
        return {
            "crop": bool(merged.get("crop_to_patches", ip.crop_to_patches)),
            "min": int(merged.get("min_patches", ip.min_patches)),
            "max": int(merged.get("max_patches", ip.max_patches)),
            "tile": (size_field(size, "width"), size_field(size, "height")),
        }

    def token_side(self, tile: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of one tile's token grid: patches per side times the pixel shuffle's
        ``downsample_ratio``."""
        vc = self.model.config.vision_config
        ph, pw = (vc.patch_size, vc.patch_size) if isinstance(vc.patch_size, int) else tuple(vc.patch_size)
        ratio = float(self.model.config.downsample_ratio)
        tw, th = tile
        return round(th // ph * ratio), round(tw // pw * ratio)

    def tiling(self, image_size: tuple[int, int]) -> tuple[int, int, bool]:
        """(cols, rows, thumbnail) of one image, recomputed from the image processor's settings."""
        s = self._images_settings()
        if not s["crop"] or s["max"] <= 1:
            return 1, 1, False
        cols, rows = tile_grid(image_size, s["tile"], s["min"], s["max"])
        return cols, rows, cols * rows > 1

    # ---- views ---------------------------------------------------------------------

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        """Per batch row, each image's views: the stitched tiles (canonical) and, for a
        multi-tile image, the thumbnail; ``<img>`` / ``</img>`` as separators."""
        ids = enc["input_ids"]
        tok = self.processor
        start_id, end_id, ctx_id = int(tok.start_image_token_id), int(tok.end_image_token_id), self.image_token_id
        n_images = int(sum((ids[r] == start_id).sum() for r in range(ids.shape[0])))
        sizes = self._check_sizes(image_sizes, n_images)
        tile = self._images_settings()["tile"]
        sh, sw = self.token_side(tile)
        out: list[list[ImageGrid]] = []
        k, n_tiles_total = 0, 0
        for r in range(ids.shape[0]):
            row = ids[r].tolist()
            grids = []
            for open_pos in (i for i, t in enumerate(row) if t == start_id):
                close_pos = row.index(end_id, open_pos) if end_id in row[open_pos:] else -1
                n = close_pos - open_pos - 1
                if close_pos < 0 or any(t != ctx_id for t in row[open_pos + 1 : close_pos]):
                    raise ValueError(f"{self.family}: image {k} at row {r} is not <img> + <IMG_CONTEXT>... + </img>")
                cols, rows, thumb = self.tiling(sizes[k])
                views = cols * rows + thumb
                if n != views * sh * sw:
                    raise ValueError(
                        f"{self.family}: image {k} ({sizes[k][0]}x{sizes[k][1]}) has {n} <IMG_CONTEXT> tokens, but "
                        f"its tiling ({cols}x{rows} tiles{' + thumbnail' if thumb else ''} of {sh}x{sw} tokens) "
                        f"gives {views * sh * sw}"
                    )
                grids.append(self._views(open_pos, close_pos, cols, rows, thumb, (sh, sw), sizes[k]))
                n_tiles_total += views
                k += 1
            out.append(grids)
        pv = enc.get("pixel_values")
        if pv is not None and int(pv.shape[0]) != n_tiles_total:
            raise ValueError(
                f"{self.family}: the processor produced {int(pv.shape[0])} tiles (pixel_values), "
                f"the recomputed tiling gives {n_tiles_total}"
            )
        return out

    @staticmethod
    def _views(open_pos, close_pos, cols, rows, thumb, side, image_size) -> ImageGrid:
        sh, sw = side
        first = open_pos + 1
        # tile t = ti * cols + tj holds tokens [t * sh * sw, (t + 1) * sh * sw), row-major within the tile
        tiles = np.arange(first, first + rows * cols * sh * sw, dtype=np.int64).reshape(rows, cols, sh, sw)
        stitched = tiles.transpose(0, 2, 1, 3).reshape(-1)  # [rows * sh, cols * sw] row-major over the image
        box = full_box(image_size)
        views = [View(rows * sh, cols * sw, stitched, box, name="tiles")]
        if thumb:
            last = first + rows * cols * sh * sw
            views.append(View(sh, sw, np.arange(last, last + sh * sw, dtype=np.int64), box, name="thumbnail"))
        return ImageGrid(views=tuple(views), canonical=0, separators=np.array([open_pos, close_pos], dtype=np.int64))
