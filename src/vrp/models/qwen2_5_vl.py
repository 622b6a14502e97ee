"""Qwen2.5-VL family: Qwen2-VL's prompt layout and geometry, with a windowed vision tower.

The vision tower attends within windows in most blocks (full attention in a few); what the
language model sees is the same one grid of merged tokens per image as Qwen2-VL's
(``image_grid_thw`` after the 2x2 merge), so the adapter is Qwen2-VL's.
"""

from __future__ import annotations

from vrp.models.base import register
from vrp.models.qwen2vl import Qwen2VLAdapter


@register
class Qwen25VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen2_5_vl",)
    family = "qwen2_5_vl"
