"""SmolVLM family: Idefics3's scheme (tiles with row/col markers, the global view last, a
pixel-shuffle connector, the language model at ``model.text_model``) with a SmolLM2 (Llama)
decoder and a larger shuffle (8 x 8 = 64 tokens per 512 px tile in the 256M/500M checkpoints).
Views, boxes, separators and the canonical view are Idefics3's (:mod:`vrp.models.idefics3`).
Its processor needs the ``num2words`` package (a dependency of vrp).
"""

from __future__ import annotations

from vrp.models.base import register
from vrp.models.idefics3 import Idefics3Adapter


@register
class SmolVLMAdapter(Idefics3Adapter):
    model_types = ("smolvlm",)
    family = "smolvlm"
