"""Mistral 3 family: Pixtral vision tower (native resolution, 2-D RoPE) + patch-merging
projector + Mistral decoder.

**Prompt layout.** Images keep their aspect ratio: the processor scales an image down to fit
``longest_edge`` if it is larger, then rounds each side up to a multiple of
``patch_size * spatial_merge_size`` (28 px in the released checkpoints), so the grid spans the
whole image. Each merged cell is one ``[IMG]`` token, row by row; every row is followed by
``[IMG_BREAK]``, the last one replaced by ``[IMG_END]``. The grid is
``image_sizes // (patch_size * spatial_merge_size)`` (the processor's resized size, which the
model reads too); the break and end tokens are the image's separators, never patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register
from vrp.models.grids import ImageGrid, full_box, single_view


@register
class Mistral3Adapter(ModelAdapter):
    model_types = ("mistral3",)
    family = "mistral3"
    canonical_view = (
        "the image's one grid of merged patches at native resolution (image_sizes // (patch_size * "
        "spatial_merge_size)); the [IMG_BREAK] after each row and the final [IMG_END] are separators"
    )
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    @property
    def cell_size(self) -> int:
        """Pixels of the resized image per grid cell: the vision patch times the spatial merge."""
        cfg = self.model.config
        return int(cfg.vision_config.patch_size) * int(cfg.spatial_merge_size)

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        ids = enc["input_ids"].cpu().numpy()
        # [n_images, 2] (height, width) of each resized image, multiples of cell_size
        shapes = [(int(h) // self.cell_size, int(w) // self.cell_size) for h, w in enc["image_sizes"].tolist()]
        sizes = self._check_sizes(image_sizes, len(shapes))
        img = self.image_token_id
        brk, end = int(self.processor.image_break_token_id), int(self.processor.image_end_token_id)
        out: list[list[ImageGrid]] = []
        k = 0
        for r in range(ids.shape[0]):
            row, grids, start = ids[r], [], 0
            ends = np.flatnonzero(row == end).tolist()
            if k + len(ends) > len(shapes):
                raise ValueError(
                    f"{self.family}: the batch holds more {self.processor.image_end_token} tokens than the "
                    f"{len(shapes)} images the processor encoded"
                )
            for e in ends:
                rows, cols = shapes[k]
                n = rows * (cols + 1)  # each row's [IMG] tokens and its break (the last: [IMG_END])
                block = row[max(e - n + 1, start) : e + 1]
                found = int((row[start : e + 1] == img).sum())
                layout = np.full((rows, cols + 1), img)
                layout[:, -1] = brk
                layout[-1, -1] = end
                if found != rows * cols or len(block) != n or not (block.reshape(rows, cols + 1) == layout).all():
                    raise ValueError(
                        f"{self.family}: image {k} (row {r}) is a {rows}x{cols} grid (image_sizes // "
                        f"{self.cell_size}): expected {rows * cols} {self.processor.image_token} tokens in {rows} rows "
                        f"of {cols}, each closed by {self.processor.image_break_token} / "
                        f"{self.processor.image_end_token}; found {found} {self.processor.image_token} tokens"
                    )
                pos = np.arange(e - n + 1, e + 1).reshape(rows, cols + 1)
                grids.append(single_view(rows, cols, pos[:, :-1].ravel(), full_box(sizes[k]), separators=pos[:, -1]))
                start, k = e + 1, k + 1
            if int((row[start:] == img).sum()):
                raise ValueError(f"{self.family}: row {r} has {self.processor.image_token} tokens after its last image")
            out.append(grids)
        if k != len(shapes):
            raise ValueError(f"{self.family}: {k} images in the prompts for the {len(shapes)} the processor encoded")
        return out
