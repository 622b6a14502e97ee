"""PaliGemma family: SigLIP vision tower + linear projector + Gemma decoder (prefix-LM)."""

from __future__ import annotations

from typing import ClassVar

from vrp.models.base import LANGUAGE_MODULES, ModelAdapter, register


@register
class PaliGemmaAdapter(ModelAdapter):
    model_types = ("paligemma",)
    family = "paligemma"
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        **LANGUAGE_MODULES,
    }

    def image_layouts(self, enc: dict) -> list[tuple[int, int, int]]:
        n = int(self.processor.image_seq_length)
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(f"paligemma: image_seq_length {n} is not a square grid")
        return [(side, side, 0)] * len(enc["pixel_values"])

    def plain_prompt(self, question: str) -> str:
        # The processor inserts <bos> after the image tokens and the "\n" separator.
        return f"<image>{question}"
