"""LLaVA-NeXT family ("anyres"): CLIP vision tower + MLP projector + a Llama / Mistral / ...
decoder, an image shown as a low-resolution base view plus a grid of high-resolution tiles.

**Layout.** One image is one contiguous run of ``image_token_id`` positions:

1. the **base** view: the whole image resized to the vision tower's input (S x S px, S =
   ``vision_config.image_size``), ``side x side`` patch tokens row-major (side = S / patch;
   CLIP's CLS token dropped by the "default" feature strategy);
2. the **tiles**: the image resized, aspect kept, into the best of ``image_grid_pinpoints``
   (the one that keeps the most of the image's pixels, then wastes the fewest), padded to it,
   cut into S x S tiles; the tiles' ``side x side`` feature maps are stitched into one grid,
   the rows (or columns) that hold only padding removed ("unpad"), and after each row of the
   stitched grid one **newline** slot (an ordinary image-token position whose embedding is
   the learned ``model.image_newline``).

So an image takes ``side**2 + rows * cols + rows`` positions. The adapter computes the grid
shapes itself from ``enc["image_sizes"]`` (height, width) and the model config, and a count
that does not match the processor's image tokens is a ``ValueError`` naming both.

**Views.** ``base`` (``side x side``; box: the pixels of the original image the base image
spans: the whole image for a plain resize to S x S, a centred window where the image
processor also centre-crops) and ``tiles`` (``rows x cols``, canonical; box: the pixels the
unpadded stitched grid spans). The tiles' box is the whole image up to the rounding of
unpad: unpad keeps ``floor(h * cols / w)`` rows (or the same for columns) of the fitted
side and cuts the rest evenly from both ends, so where the resized image does not fill whole
cells the box misses part of a cell of the image at each end (the image's edge rows are then
not in the prompt at all) or covers part of a cell of padding; for very elongated images
about one cell. An image so elongated that unpad keeps no row (or column) has the base view
only, followed by its newline slots (none, or one per row). The newline slots are the image's
``separators``.

**Resampling.** Both views are resized pixels (bicubic): a painted pixel reaches the cells
within about 2 resized px of it, which in the coarse base view can be a neighbouring cell
(at 336 / 14 a seventh of a cell). Where ``side * patch < S`` (SigLIP 384 / 14: 27 patches
see 378 of 384 px) the base box covers only what the patches see, and the tile cells are
placed uniformly (S / side px each, exact at every tile boundary, up to ``S - side * patch``
px off, 0.4 of a cell, at a tile's far edge).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register, size_field
from vrp.models.grids import Box, ImageGrid, View, contiguous_runs


def best_fit(height: int, width: int, pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The ``(height, width)`` of ``pinpoints`` an image is resized into: the one keeping the
    most of its pixels (an aspect-kept resize that fits, never counted above the original's
    area), then the one wasting the fewest; the first such in the list."""

    def score(hw):
        ph, pw = int(hw[0]), int(hw[1])
        s = min(pw / width, ph / height)
        kept = min(int(width * s) * int(height * s), width * height)
        return kept, -(ph * pw - kept)

    best = max(pinpoints, key=score)  # max keeps the first of equal scores
    return int(best[0]), int(best[1])


def fitted_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of the image resized, aspect kept, to fit ``target``: the limiting
    side fills it, the other is rounded up (and capped)."""
    th, tw = target
    if tw * height < th * width:  # width limits
        return min(-(-height * tw // width), th), tw
    return th, min(-(-width * th // height), tw)


def unpad(height: int, width: int, grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(first row, rows, first col, cols)`` of a stitched ``grid = (rows, cols)`` of cells that
    unpad keeps for an image of ``height x width`` px: the cells of the fitted side are
    ``floor(h * cols / w)`` (or the same with the roles swapped), and the rest, halved and
    rounded down, is cut from each end."""
    gh, gw = grid
    if width * gh > gw * height:  # wider than the grid: padding rows above and below
        cut = (gh - height * gw // width) // 2
        return cut, gh - 2 * cut, 0, gw
    cut = (gw - width * gh // height) // 2
    return 0, gh, cut, gw - 2 * cut


@dataclass(frozen=True)
class AnyresLayout:
    """One image's layout: a ``side x side`` base view, then ``rows x cols`` tile cells with
    a newline after each row. Without tile cells (an image so elongated that unpad keeps no
    row or column, or OneVision's multi-image case) the image has the base view only, then
    ``newlines`` newline slots."""

    side: int
    rows: int
    cols: int
    newlines: int
    base_box: Box
    tiles_box: Box | None

    @property
    def n_tokens(self) -> int:
        return self.side * self.side + self.rows * self.cols + self.newlines

    def describe(self) -> str:
        return f"base {self.side}x{self.side} + tiles {self.rows}x{self.cols} + {self.newlines} newline(s)"

    def grid(self, start: int) -> ImageGrid:
        """The image's views for a run of positions starting at ``start``."""
        n_base = self.side * self.side
        base = View(self.side, self.side, np.arange(start, start + n_base), self.base_box, name="base")
        if not (self.rows and self.cols and self.tiles_box):
            return ImageGrid((base,), canonical=0, separators=np.arange(start + n_base, start + n_base + self.newlines))
        at = start + n_base + np.arange(self.rows)[:, None] * (self.cols + 1)  # each row's first cell
        cells = (at + np.arange(self.cols)[None, :]).reshape(-1)
        tiles = View(self.rows, self.cols, cells, self.tiles_box, name="tiles")
        return ImageGrid((base, tiles), canonical=1, separators=at[:, 0] + self.cols)


@register
class LlavaNextAdapter(ModelAdapter):
    model_types = ("llava_next",)
    family = "llava_next"
    canonical_view = (
        "the stitched high-resolution tile grid ('tiles': unpadded, newline slots excluded); "
        "the low-resolution base view is 'base'"
    )
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    @property
    def image_newline(self):
        """The learned embedding every newline slot holds at the decoder's input."""
        return self.model.model.image_newline

    # ---- geometry -------------------------------------------------------------------

    @property
    def _vision(self) -> tuple[int, int, int]:
        """(tile px S, cells per tile side, patch px)."""
        vc = self.model.config.vision_config
        return int(vc.image_size), int(vc.image_size) // int(vc.patch_size), int(vc.patch_size)

    def _base_box(self, height: int, width: int) -> Box:
        # The base image: a plain resize to the image processor's size (square for every
        # released checkpoint), then that size again and, where the processor crops, a centre
        # crop; both resizes scale the axes independently, so the box is the window the
        # patches see (the crop, less the px past side * patch: 6 px of SigLIP's 384 / 14)
        # divided by the scale.
        ip = self.processor.image_processor
        size = getattr(ip, "size", None)
        sh = size_field(size, "height") or size_field(size, "shortest_edge")
        sw = size_field(size, "width") or size_field(size, "shortest_edge")
        if not (sh and sw):
            raise ValueError(
                f"{self.family}: cannot read the base view's size from the image processor's size {size!r}"
            )
        crop = getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else None
        ch, cw = (size_field(crop, "height") or sh, size_field(crop, "width") or sw) if crop else (sh, sw)
        top, left = round((sh - ch) / 2), round((sw - cw) / 2)
        _, side, patch = self._vision
        seen_h, seen_w = min(ch, side * patch), min(cw, side * patch)
        return (left * width / sw, top * height / sh, (left + seen_w) * width / sw, (top + seen_h) * height / sh)

    def _tiles(self, height: int, width: int) -> tuple[int, int, Box]:
        """(rows, cols, box) of the unpadded stitched tile grid of an image."""
        tile, side, _ = self._vision
        target = best_fit(height, width, self.model.config.image_grid_pinpoints)
        grid = (target[0] // tile * side, target[1] // tile * side)
        r0, rows, c0, cols = unpad(height, width, grid)
        fh, fw = fitted_size(height, width, target)
        py, px = (target[0] - fh) // 2, (target[1] - fw) // 2  # where the padding pastes the image
        cell = tile / side  # px of the padded image per cell
        sx, sy = width / fw, height / fh
        box = (
            (c0 * cell - px) * sx,
            (r0 * cell - py) * sy,
            ((c0 + cols) * cell - px) * sx,
            ((r0 + rows) * cell - py) * sy,
        )
        return rows, cols, box

    def image_layout(self, height: int, width: int, tiled: bool = True) -> AnyresLayout:
        """The layout of one image of ``height x width`` px (as ``enc["image_sizes"]`` gives it);
        ``tiled`` False: shown without tiles (OneVision's multi-image prompts; LLaVA-NeXT always tiles)."""
        rows, cols, box = self._tiles(height, width)
        return AnyresLayout(self._vision[1], rows, cols, rows, self._base_box(height, width), box)

    def _tiled(self, enc: dict) -> list[bool]:
        """Whether each image of the batch was cut into tiles (always, for LLaVA-NeXT)."""
        return [True] * len(enc["image_sizes"])

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        raw = enc["image_sizes"]  # [n_images, 2] (height, width), on the model's device
        hw = [(int(h), int(w)) for h, w in (raw.tolist() if hasattr(raw, "tolist") else raw)]
        sizes = self._check_sizes(image_sizes, len(hw))
        for k, ((h, w), size) in enumerate(zip(hw, sizes, strict=True)):
            if (w, h) != size:
                raise ValueError(f"{self.family}: image {k} is {size[0]}x{size[1]} but the processor saw {w}x{h}")
        layouts = [self.image_layout(h, w, t) for (h, w), t in zip(hw, self._tiled(enc), strict=True)]
        ids = enc["input_ids"]
        out: list[list[ImageGrid]] = []
        k = 0
        for r in range(ids.shape[0]):
            grids: list[ImageGrid] = []
            for run in contiguous_runs((ids[r] == self.image_token_id).nonzero().flatten().tolist()):
                at, first = 0, k
                while at < len(run) and k < len(layouts):  # images may sit back to back in one run
                    grids.append(layouts[k].grid(int(run[at])))
                    at += layouts[k].n_tokens
                    k += 1
                if at != len(run):
                    want = " + ".join(f"{lay.n_tokens} ({lay.describe()})" for lay in layouts[first:k]) or "none"
                    raise ValueError(
                        f"{self.family}: the processor put {len(run)} image tokens in a run at batch row {r}, "
                        f"the grid geometry of image(s) {first}..{k - 1} gives {want}; check that the processor's "
                        "image_grid_pinpoints, patch size, feature strategy (and OneVision's vision_aspect_ratio) match the model config"
                    )
            out.append(grids)
        if k != len(layouts):
            raise ValueError(
                f"{self.family}: the prompts hold image tokens for {k} images, the processor encoded {len(layouts)}"
            )
        return out

    def answer_suffix(self, answer: str) -> str:
        # A space after "ASSISTANT:" / "[/INST]", none after a template that ends its turn header with a newline.
        sep = "" if self.prompt("").endswith(("\n", " ")) else " "
        return f"{sep}{answer}{self.tokenizer.eos_token}"


def max_tiles(vision_aspect_ratio: str) -> int:
    """N of an ``anyres_max_N`` aspect-ratio setting (LLaVA-OneVision)."""
    head, _, n = str(vision_aspect_ratio).rpartition("_")
    if head != "anyres_max" or not n.isdigit():
        raise ValueError(f"vision_aspect_ratio {vision_aspect_ratio!r} is not of the form anyres_max_N")
    return int(n)


def downsampled(rows: int, cols: int, side: int, limit: int) -> tuple[int, int]:
    """``(rows, cols)`` of an unpadded grid after anyres_max_``limit``: a grid of more than
    ``limit * 1.1**2`` tiles' worth of cells (``side**2`` each) is bilinearly resized, rows and
    cols each to ``floor(n / ratio)`` with ``ratio = sqrt(rows * cols / (limit * side**2))``."""
    ratio = math.sqrt(rows * cols / (limit * side * side))
    if ratio <= 1.1:
        return rows, cols
    return int(rows // ratio), int(cols // ratio)
