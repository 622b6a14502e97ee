"""LLaVA-OneVision family: SigLIP vision tower + MLP projector + Qwen2 decoder, LLaVA-NeXT's
anyres layout (see :mod:`vrp.models.llava_next`) with two differences:

* **anyres_max_N downsampling.** When the unpadded stitched tile grid (``rows x cols`` cells)
  holds more than ``N * 1.1**2`` tiles' worth of cells (N from ``vision_aspect_ratio``,
  ``anyres_max_9`` in the released checkpoints), it is bilinearly resized to
  ``floor(rows / ratio) x floor(cols / ratio)``, ``ratio = sqrt(rows * cols / (N * side**2))``,
  before the newline slots go in: one newline per row of the *downsampled* grid. The
  ``tiles`` view is that downsampled grid, over the same box as the unpadded one. A cell is
  then a bilinear mix (align_corners False) of the up to 2 x 2 unpadded cells nearest its
  centre, which can reach past the cell's own box (by less than one unpadded cell): a pixel
  there still moves it (the family tests check exactly this receptive field).
* **Several images in one prompt** are not tiled: each is padded to a square (mean colour),
  resized to S x S and shown as its base view only, followed by one newline slot. Such an
  image has one view, ``base`` (box: the padded square, larger than the image), which is then
  its canonical view. Which prompts hold several images comes from ``enc["batch_num_images"]``.

The base view is SigLIP's full grid (27 x 27 for 384 / 14; no CLS token, feature strategy
"full").
"""

from __future__ import annotations

from vrp.models.base import register
from vrp.models.llava_next import AnyresLayout, LlavaNextAdapter, downsampled, max_tiles


@register
class LlavaOnevisionAdapter(LlavaNextAdapter):
    model_types = ("llava_onevision",)
    family = "llava_onevision"
    canonical_view = (
        "the stitched high-resolution tile grid ('tiles': unpadded, downsampled past anyres_max_N, "
        "newline slots excluded); the low-resolution base view is 'base' (the only view of an image "
        "in a prompt with several images)"
    )

    def image_layout(self, height: int, width: int, tiled: bool = True) -> AnyresLayout:
        side = self._vision[1]
        if not tiled:  # padded to a square around the image, then the base view's resize
            m = max(height, width)
            left, top = (m - width) // 2, (m - height) // 2
            x0, y0, x1, y1 = self._base_box(m, m)
            return AnyresLayout(side, 0, 0, 1, (x0 - left, y0 - top, x1 - left, y1 - top), None)
        rows, cols, box = self._tiles(height, width)
        rows, cols = downsampled(rows, cols, side, max_tiles(self.model.config.vision_aspect_ratio))
        return AnyresLayout(side, rows, cols, rows, self._base_box(height, width), box)

    def _tiled(self, enc: dict) -> list[bool]:
        counts = enc.get("batch_num_images")
        if counts is None:  # the model then tiles every image
            return [True] * len(enc["image_sizes"])
        return [int(n) == 1 for n in counts for _ in range(int(n))]
