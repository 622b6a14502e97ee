"""Gemma 3 family: SigLIP vision tower + average-pooling projector + Gemma 3 decoder.

**Prompt layout.** The processor expands each ``<start_of_image>`` of the prompt into
``\\n\\n<start_of_image>`` + ``mm_tokens_per_image`` ``<image_soft_token>`` +
``<end_of_image>\\n\\n``. The soft tokens are a fixed square grid (16 x 16 in the released
checkpoints): the image is squashed to the image processor's square size (aspect ratio not
kept, so the grid spans the whole image) and the projector average-pools the SigLIP patch
grid down to ``sqrt(mm_tokens_per_image)`` per side. ``<start_of_image>`` and
``<end_of_image>`` are the image's separators.

**Pan-and-scan** (``do_pan_and_scan=True`` at the processor call; off by default, and in
transformers 5.23 only a call keyword turns it on) is handled as extra views: the full image
comes first as the canonical view ``image``, then each crop as a view ``crop{i}`` with its
pixel box in the original image (the processor cuts the long side into equal crops of
``ceil(side / n)`` pixels and squashes each to the same square). Each crop is wrapped in its own
``<start_of_image>`` ... ``<end_of_image>`` (separators too); the sentence the processor writes
around them ("Here is the original image ... and here are some crops ...") is ordinary text.
The crops of an image are attributed from the token layout, which needs one image per prompt
when crops are present (vrp's prompts have one); otherwise a clear error.

**Attention.** The language model attends bidirectionally within each contiguous run of image
tokens (the processor's ``token_type_ids``) and alternates sliding-window and global blocks;
both reach vrp's capture function through the boolean mask transformers builds, so captured
rows are the model's own. Decode steps on sliding-window blocks see only the keys still in
the window (the cache drops the others).

**Residual writes.** Gemma 3 normalizes each sub-block's output before adding it to the
residual stream, so the sites ``attn_out`` / ``mlp_out`` are the outputs of
``post_attention_layernorm`` / ``post_feedforward_layernorm`` (what is added), not of
``self_attn`` / ``mlp``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register
from vrp.models.grids import Box, ImageGrid, View, full_box


def crop_boxes(image_size: tuple[int, int], n_crops: int) -> list[Box]:
    """The pixel boxes of Gemma 3's ``n_crops`` pan-and-scan crops of an image ``(w, h)``:
    equal crops of ``ceil(side / n)`` along the long side (width on ties), row-major, the last
    one cut at the image's edge."""
    w, h = image_size
    nx, ny = (n_crops, 1) if w >= h else (1, n_crops)
    cw, ch = math.ceil(w / nx), math.ceil(h / ny)
    return [
        (float(x), float(y), float(min(x + cw, w)), float(min(y + ch, h)))
        for y in range(0, ch * ny, ch)
        for x in range(0, cw * nx, cw)
    ]


@register
class Gemma3Adapter(ModelAdapter):
    model_types = ("gemma3",)
    family = "gemma3"
    canonical_view = (
        "the image's one square grid of pooled soft tokens (sqrt(mm_tokens_per_image) per side), the whole "
        "image squashed to the processor's size; pan-and-scan crops, when present, are extra views after it"
    )
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }
    # each sub-block's write is its post-norm's output (what the block adds to the residual)
    layer_paths: ClassVar[dict[str, str]] = {
        "attn": "post_attention_layernorm",
        "mlp": "post_feedforward_layernorm",
        "o_proj": "self_attn.o_proj",
    }

    @property
    def _boi(self) -> str:
        return self.processor.boi_token

    def encode(self, images: list, prompts: list[str], padding_side: str = "left") -> dict:
        """The processor takes one list of images per prompt: a flat list is split by the
        ``<start_of_image>`` placeholders of each prompt. A prompt that starts with ``<bos>`` (the
        chat template writes it) gets no second one from the tokenizer."""
        if images and not isinstance(images[0], list | tuple):
            counts = [p.count(self._boi) for p in prompts]
            if sum(counts) != len(images):
                raise ValueError(
                    f"{self.family}: {len(images)} images for {sum(counts)} {self._boi} placeholders in the prompts"
                )
            it = iter(images)
            images = [[next(it) for _ in range(c)] for c in counts]
        return super().encode(images, prompts, padding_side)

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        cfg = self.model.config
        n = int(cfg.mm_tokens_per_image)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{self.family}: mm_tokens_per_image {n} is not a square grid")
        ids = enc["input_ids"].cpu().numpy()
        blocks = [self._blocks(ids[r], r, n, cfg) for r in range(ids.shape[0])]
        n_blocks = sum(len(b) for b in blocks)
        sizes = [(int(w), int(h)) for w, h in image_sizes]
        if n_blocks == len(sizes):  # one view per image: no pan-and-scan
            views_per_image = [[b] for row in blocks for b in row]
            rows_of = [r for r, row in enumerate(blocks) for _ in row]
        elif n_blocks > len(sizes) and len(sizes) == sum(1 for row in blocks if row) == len(blocks):
            # pan-and-scan, one image per prompt: the row's first block is the full image, the rest its crops
            views_per_image, rows_of = blocks, list(range(len(blocks)))
        else:
            raise ValueError(
                f"{self.family}: {n_blocks} image blocks ({self._boi} ... {self.tokenizer.eoi_token}) in the batch "
                f"for {len(sizes)} images; pan-and-scan crops can only be attributed with one image per prompt"
            )
        out: list[list[ImageGrid]] = [[] for _ in blocks]
        for k, (starts, size) in enumerate(zip(views_per_image, sizes, strict=True)):
            boxes = [full_box(size)] + (crop_boxes(size, len(starts) - 1) if len(starts) > 1 else [])
            views, seps = [], []
            for i, (start, box) in enumerate(zip(starts, boxes, strict=True)):
                views.append(
                    View(side, side, np.arange(start + 1, start + 1 + n), box, "image" if i == 0 else f"crop{i - 1}")
                )
                seps += [start, start + 1 + n]
            out[rows_of[k]].append(ImageGrid(views=tuple(views), separators=np.asarray(seps, dtype=np.int64)))
        return out

    def _blocks(self, ids: np.ndarray, row: int, n: int, cfg) -> list[int]:
        """Positions of the ``<start_of_image>`` of each image block of one prompt, each checked
        to hold exactly ``n`` soft tokens before its ``<end_of_image>``."""
        soft, boi, eoi = int(cfg.image_token_id), int(cfg.boi_token_id), int(cfg.eoi_token_id)
        starts = np.flatnonzero(ids == boi).tolist()
        for s in starts:
            end = np.flatnonzero(ids[s + 1 :] == eoi)
            found = int(end[0]) if len(end) else len(ids) - s - 1
            if found != n or not (ids[s + 1 : s + 1 + n] == soft).all():
                raise ValueError(
                    f"{self.family}: expected {n} image soft tokens (mm_tokens_per_image) between "
                    f"{self._boi} and {self.tokenizer.eoi_token} at row {row}, found {found} tokens"
                )
        if (total := int((ids == soft).sum())) != n * len(starts):
            raise ValueError(
                f"{self.family}: row {row} has {total} image soft tokens, expected {n * len(starts)} "
                f"({len(starts)} image blocks of {n})"
            )
        return starts
