"""Idefics3 family: SigLIP-style vision tower on image tiles + pixel-shuffle connector + Llama
decoder (``model.text_model``). SmolVLM (:mod:`vrp.models.smolvlm`) shares the scheme.

**What the language model sees.** The image processor resizes the image so that its longest
edge is ``size["longest_edge"]`` (small images are upscaled), stretches it to the next multiples
of the tile size ``max_image_size["longest_edge"]`` and, when it is larger than one tile, cuts
it into ``rows x cols`` tiles. Each tile is a grid of ``N_side x N_side`` tokens (the vision
tower's patches, merged ``scale_factor x scale_factor`` by the connector's pixel shuffle,
row-major); ``N = N_side^2`` is the processor's ``image_seq_len``. The prompt holds, per image::

    <fake_token_around_image><row_1_col_1> N x <image>  <fake_token_around_image><row_1_col_2> ...  \\n
    ...                                                                                          \\n
    \\n<fake_token_around_image><global-img> N x <image> <fake_token_around_image>

the tiles row-major with a newline after each tile row, then the whole image squashed to one
tile (the global view). An image no larger than one tile (or any image when
``do_image_splitting`` is off) is the global part alone.

**Views.** ``tiles`` (canonical): the tiles stitched into one grid of ``(rows * N_side) x
(cols * N_side)`` tokens, row-major over the whole resized image: tile (r, c)'s cell (i, j) is
row ``r * N_side + i``, column ``c * N_side + j``. ``global``: the ``N_side x N_side`` grid of
the global view. An image without tiles has the global view only (then canonical).

**Boxes.** Every step is a plain resize of the whole image (no crop, no padding: padding only
fills the batch's missing tiles, which the model drops), and the tiles partition the resized
image, so both views span the whole original image ``(0, 0, w, h)``. The resize keeps the
aspect ratio only up to rounding: the short edge is rounded to even, then both edges up to a
multiple of the tile, so a stitched cell covers ``w / (cols * N_side)`` by ``h / (rows *
N_side)`` original pixels (not always square), and a global cell ``w / N_side`` by ``h / N_side``.

**Separators.** Every token of the image's span that is not a patch: the
``<fake_token_around_image>`` markers, ``<row_r_col_c>``, ``<global-img>`` and the newlines.

**Geometry source.** The processor drops the tile rows and columns from its output: they are
recomputed from the image processor's resize arithmetic (:meth:`Idefics3Adapter.tile_grid`,
tested against ``image_processor(..., return_row_col_info=True)``), and the image tokens the
processor wrote, their runs and their markers are checked against them (a mismatch is an error
naming the family and both numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from vrp.models.base import ModelAdapter, register, size_field
from vrp.models.grids import ImageGrid, View, contiguous_runs, full_box

# The image processors' absolute bound on a resized image's edge (MAX_IMAGE_SIZE in
# transformers' image_processing_idefics3 / _smolvlm).
MAX_IMAGE_SIZE = 4096


def _rescale_to_max_len(h: int, w: int, max_len: int) -> tuple[int, int]:
    # transformers' _resize_output_size_rescale_to_max_len (min_len 1): the longest edge to
    # max_len, the other by the aspect ratio, truncated and rounded up to even.
    aspect = w / h
    if w >= h:
        w, h = max_len, int(max_len / aspect)
        h += h % 2
    else:
        h, w = max_len, int(max_len * aspect)
        w += w % 2
    return max(h, 1), max(w, 1)


def _scale_below(h: int, w: int, max_len: int) -> tuple[int, int]:
    # transformers' _resize_output_size_scale_below_upper_bound.
    aspect = w / h
    if w >= h and w > max_len:
        w, h = max_len, int(max_len / aspect)
    elif h > w and h > max_len:
        h, w = max_len, int(max_len * aspect)
    return max(h, 1), max(w, 1)


def _to_tile_multiples(h: int, w: int, tile: int) -> tuple[int, int]:
    # The image processor's resize_for_vision_encoder.
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    return h, w


def tile_grid(image_processor, image_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the tiles an Idefics3 / SmolVLM image processor cuts an image of
    ``(width, height)`` into; (0, 0) when it shows the image as the global view alone.

    The arithmetic of the image processor's ``preprocess`` (resize to ``size``, bound by
    MAX_IMAGE_SIZE, then up to multiples of the tile), tested against its
    ``return_row_col_info`` output. Its ``get_number_of_image_patches`` agrees only when the
    longest edge is a multiple of the tile (it rounds the short edge from the first resize, not
    the second, and ignores ``do_resize=False`` and a height/width ``size``)."""
    ip = image_processor
    w, h = (int(v) for v in image_size)
    if not ip.do_image_splitting:
        return 0, 0
    tile = size_field(ip.max_image_size, "longest_edge")
    if ip.do_resize:
        longest = size_field(ip.size, "longest_edge")
        if longest:
            h, w = _scale_below(*_rescale_to_max_len(h, w, longest), MAX_IMAGE_SIZE)
        else:
            h, w = size_field(ip.size, "height"), size_field(ip.size, "width")
    h, w = _to_tile_multiples(h, w, tile)
    if h > tile or w > tile:
        return h // tile, w // tile
    return 0, 0


@register
class Idefics3Adapter(ModelAdapter):
    model_types = ("idefics3",)
    family = "idefics3"
    canonical_view = (
        "tiles: the image's tiles stitched into one grid of (tile rows x N_side) by (tile cols x N_side) "
        "tokens, row-major over the whole resized image (the global view, 'global', is also recorded); "
        "an image shown without tiles: its global view"
    )
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_model",
        "projector": "model.connector",
        "decoder_layers": "model.text_model.layers",
        "final_norm": "model.text_model.norm",
        "unembed": "lm_head",
    }

    # ---- the processor's tiling ------------------------------------------------------

    def tile_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the tiles of an image of ``(width, height)``; (0, 0): global view only."""
        return tile_grid(self.processor.image_processor, image_size)

    @property
    def tokens_per_view(self) -> int:
        """N: image tokens per tile and for the global view (the processor's ``image_seq_len``),
        checked against the model's vision tower and pixel shuffle."""
        n = int(self.processor.image_seq_len)
        vc = self.model.config.vision_config
        side = vc.image_size // vc.patch_size // self.model.config.scale_factor
        if side * side != n:
            raise ValueError(
                f"{self.family}: the processor's image_seq_len is {n}, but the model's vision tower gives "
                f"{side} x {side} = {side * side} tokens per tile (image_size {vc.image_size}, patch "
                f"{vc.patch_size}, scale_factor {self.model.config.scale_factor})"
            )
        return n

    # ---- prompt and grids --------------------------------------------------------------

    def encode(self, images: list, prompts: list[str], padding_side: str = "left") -> dict:
        """Processor call; a flat list of images is split by prompt (each prompt takes as many
        images as it has image placeholders), as both processors expect a nested list."""
        if images and not isinstance(images[0], list | tuple):
            counts = [p.count(self.processor.image_token) for p in prompts]
            if sum(counts) != len(images):
                raise ValueError(
                    f"{self.family}: {len(images)} images for {sum(counts)} image placeholders in the prompts"
                )
            it = iter(images)
            images = [[next(it) for _ in range(n)] for n in counts]
        return super().encode(images, prompts, padding_side)

    def _marker_ids(self) -> tuple[int, int]:
        tok, proc = self.tokenizer, self.processor
        glob = getattr(proc, "global_image_token", None) or proc.global_image_tag
        return tok.convert_tokens_to_ids(proc.fake_image_token), tok.convert_tokens_to_ids(glob)

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        """Per batch row, each image as its stitched tile grid (canonical) and its global view,
        with every marker, row/col token and newline of the image as separators."""
        ids = np.asarray(enc["input_ids"].cpu() if hasattr(enc["input_ids"], "cpu") else enc["input_ids"])
        sizes = [(int(w), int(h)) for w, h in image_sizes]
        n = self.tokens_per_view
        side = math.isqrt(n)
        tiles = [self.tile_grid(s) for s in sizes]
        expected = sum((r * c + 1) * n for r, c in tiles)
        found = int((ids == self.image_token_id).sum())
        if found != expected:
            raise ValueError(
                f"{self.family}: the prompts hold {found} image tokens, but the image processor's tiling of the "
                f"{len(sizes)} images ({', '.join(f'{r}x{c}' for r, c in tiles)} tiles, {n} tokens per view) "
                f"gives {expected}"
            )
        fake, glob = self._marker_ids()
        out: list[list[ImageGrid]] = []
        k = 0
        for b in range(ids.shape[0]):
            runs = contiguous_runs(np.flatnonzero(ids[b] == self.image_token_id))
            grids, i = [], 0
            while i < len(runs):
                if k >= len(sizes):
                    raise ValueError(f"{self.family}: row {b} has more image tokens than there are images")
                (rows, cols), size = tiles[k], sizes[k]
                need = rows * cols + 1
                block = runs[i : i + need]
                if len(block) != need or any(len(run) != n for run in block):
                    raise ValueError(
                        f"{self.family}: image {k} (row {b}) needs {need} runs of {n} image tokens "
                        f"({rows}x{cols} tiles + the global view), found runs of {[len(run) for run in block]}"
                    )
                self._check_markers(ids[b], block, rows, cols, fake, glob, k)
                grids.append(self._grid(block, rows, cols, side, size, ids[b], fake))
                i += need
                k += 1
            out.append(grids)
        if k != len(sizes):
            raise ValueError(f"{self.family}: {len(sizes)} image sizes for the {k} images found in the prompts")
        return out

    def _check_markers(self, row_ids, block, rows: int, cols: int, fake: int, glob: int, k: int) -> None:
        """Each tile's run follows ``<fake_token_around_image><row_r_col_c>``; the global run
        follows ``<fake_token_around_image><global-img>`` and ends before
        ``<fake_token_around_image>``."""
        tok, unk = self.tokenizer, self.tokenizer.unk_token_id
        want = []
        for t, run in enumerate(block[:-1]):
            rc = tok.convert_tokens_to_ids(f"<row_{t // cols + 1}_col_{t % cols + 1}>")
            if rc is not None and rc != unk:  # a single token in this tokenizer
                want += [(run[0] - 2, fake), (run[0] - 1, rc)]
        g = block[-1]
        want += [(g[0] - 2, fake), (g[0] - 1, glob), (g[-1] + 1, fake)]
        bad = [(int(p), tok.convert_ids_to_tokens(int(row_ids[p])) if 0 <= p < len(row_ids) else None)
               for p, t in want if not (0 <= p < len(row_ids) and row_ids[p] == t)]  # fmt: skip
        if bad:
            raise ValueError(
                f"{self.family}: image {k} ({rows}x{cols} tiles) is not laid out as the processor's tiles "
                f"+ global view; unexpected tokens at {bad[:4]}"
            )

    def _grid(self, block, rows: int, cols: int, side: int, size, row_ids, fake: int) -> ImageGrid:
        box = full_box(size)
        g = np.asarray(block[-1], dtype=np.int64)
        views = []
        if rows:
            t = np.stack(block[:-1]).reshape(rows, cols, side, side)  # [tile row, tile col, i, j]
            stitched = t.transpose(0, 2, 1, 3).reshape(-1)  # row-major over (rows*side, cols*side)
            views.append(View(rows * side, cols * side, stitched, box, name="tiles"))
        views.append(View(side, side, g, box, name="global"))
        first = int(block[0][0])
        before = np.flatnonzero(row_ids[:first] == fake)
        if not len(before):
            raise ValueError(f"{self.family}: no <fake_token_around_image> opens the image at position {first}")
        start = int(before[-1])  # the image's first marker
        span = np.arange(start, int(g[-1]) + 2, dtype=np.int64)  # through the closing marker
        patches = np.concatenate(block)
        return ImageGrid(views=tuple(views), canonical=0, separators=span[~np.isin(span, patches)])
