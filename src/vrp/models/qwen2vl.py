"""Qwen2-VL family: dynamic-resolution ViT with 2x2 merge + Qwen2 decoder (GQA, M-RoPE)."""

from __future__ import annotations

from typing import ClassVar

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register


@register
class Qwen2VLAdapter(ModelAdapter):
    model_types = ("qwen2_vl",)
    family = "qwen2vl"
    canonical_view = "the image's one grid of merged tokens (image_grid_thw / spatial_merge_size)"
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.visual",
        "projector": "model.visual.merger",
        **LANGUAGE_MODULES,
    }

    def image_layouts(self, enc: dict) -> list[tuple[int, int, int]]:
        # Per image from image_grid_thw (patches), after the spatial merge.
        m = int(self.model.config.vision_config.spatial_merge_size)
        out = []
        for t, h, w in enc["image_grid_thw"].tolist():
            if t != 1:
                raise ValueError(f"{self.family}: temporal grid {t} (video) is not supported for image capture")
            out.append((h // m, w // m, 0))
        return out

    def generation_state(self) -> dict:
        # M-RoPE: the offset between text positions and rotary positions, per row, computed
        # at prefill and read by every later decoding step.
        deltas = self.model.model.rope_deltas
        return {"rope_deltas": None if deltas is None else deltas.clone()}

    def restore_generation_state(self, state: dict, repeat: int) -> None:
        deltas = state.get("rope_deltas")
        self.model.model.rope_deltas = None if deltas is None else deltas.repeat_interleave(repeat, dim=0)
