"""LLaVA(-1.5) family: CLIP vision tower + MLP projector + Llama/Vicuna decoder."""

from __future__ import annotations

from typing import ClassVar

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register


@register
class LlavaAdapter(ModelAdapter):
    model_types = ("llava",)
    family = "llava"
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    def prompt(self, question: str) -> str:
        # LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:").
        return f"USER: <image>\n{question} ASSISTANT:"

    def image_layouts(self, enc: dict) -> list[tuple[int, int, int]]:
        # One square grid of image_size / patch_size per image. With the "default" feature
        # strategy the CLS token is dropped; with "full" it is kept as a leading token.
        vc = self.model.config.vision_config
        side = vc.image_size // vc.patch_size
        lead = 0 if self.model.config.vision_feature_select_strategy == "default" else 1
        return [(side, side, lead)] * len(enc["pixel_values"])

    def answer_suffix(self, answer: str) -> str:
        return f" {answer}{self.tokenizer.eos_token}"
