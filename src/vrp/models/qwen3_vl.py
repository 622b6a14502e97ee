"""Qwen3-VL family: Qwen2-VL's prompt layout and geometry (patch 16), plus deepstack.

**Deepstack.** After each of the first k decoder blocks (k = the number of the vision
tower's ``deepstack_visual_indexes``), features from an intermediate vision layer are added
to the residual stream *at the image-token positions only*. vrp's site
``blocks.{l}.resid_post`` is block l's own output, before that addition; so at image
positions the next block's input is ``resid_post + deepstack_l``, and the exact
decomposition of the residual stream is ``h_l = h_(l-1) + attn_out_l + mlp_out_l (+ deepstack_l)``.
At every other position (the decision position, where the signals and probes read the
residual, and the answer tokens) ``deepstack_l`` is zero and ``h_l = h_(l-1) + attn_out_l +
mlp_out_l`` holds exactly (tested).
"""

from __future__ import annotations

from vrp.models.base import register
from vrp.models.qwen2vl import Qwen2VLAdapter


@register
class Qwen3VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen3_vl",)
    family = "qwen3_vl"

    @property
    def deepstack_blocks(self) -> tuple[int, ...]:
        """The decoder blocks after which vision features are added at image positions."""
        return tuple(range(len(self.model.config.vision_config.deepstack_visual_indexes)))
