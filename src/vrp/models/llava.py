"""LLaVA(-1.5) family: CLIP vision tower + MLP projector + Llama/Vicuna decoder."""

from __future__ import annotations

from typing import ClassVar

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register, size_field
from vrp.models.grids import centre_crop_box, full_box


@register
class LlavaAdapter(ModelAdapter):
    model_types = ("llava",)
    family = "llava"
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    def plain_prompt(self, question: str) -> str:
        # LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), for checkpoints
        # without a chat template (llava-hf's ship one, which prompt() uses).
        return f"USER: <image>\n{question} ASSISTANT:"

    def image_layouts(self, enc: dict) -> list[tuple[int, int, int]]:
        # One square grid of image_size / patch_size per image. With the "default" feature
        # strategy the CLS token is dropped; with "full" it is kept as a leading token.
        vc = self.model.config.vision_config
        side = vc.image_size // vc.patch_size
        lead = 0 if self.model.config.vision_feature_select_strategy == "default" else 1
        return [(side, side, lead)] * len(enc["pixel_values"])

    def grid_box(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        # CLIP's shortest-edge resize and centre crop: the grid spans a centred square of the image.
        ip = self.processor.image_processor
        crop = getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else None
        if crop is None:
            return full_box(image_size)
        short = size_field(getattr(ip, "size", None), "shortest_edge") or min(image_size)
        return centre_crop_box(
            image_size, short, (size_field(crop, "width") or short, size_field(crop, "height") or short)
        )

    def answer_suffix(self, answer: str) -> str:
        return f" {answer}{self.tokenizer.eos_token}"
