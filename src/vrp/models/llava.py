"""LLaVA(-1.5) family: CLIP vision tower + MLP projector + Llama/Vicuna decoder."""

from __future__ import annotations

from typing import ClassVar

from vrp.models.base import ModelAdapter, register


@register
class LlavaAdapter(ModelAdapter):
    model_types = ("llava",)
    family = "llava"
    module_paths: ClassVar[dict[str, str]] = {
        "vision_tower": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        "decoder_layers": "model.language_model.layers",
        "final_norm": "model.language_model.norm",
        "unembed": "lm_head",
    }

    def prompt(self, question: str) -> str:
        # LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:").
        return f"USER: <image>\n{question} ASSISTANT:"

    def answer_suffix(self, answer: str) -> str:
        return f" {answer}{self.tokenizer.eos_token}"
