"""Qwen3.5 family: a hybrid language model behind Qwen3-VL's vision tower.

Most decoder blocks mix tokens with **linear attention** (Gated DeltaNet: a recurrent state,
no attention matrix), every few blocks with softmax self-attention (``config.layer_types``:
``linear_attention`` / ``full_attention``). vrp handles it explicitly:

- attention maps exist for the softmax blocks only (:meth:`attention_blocks`); the capture
  records those (``ItemCapture.attention_layers``) and nothing for the others: no map is
  fabricated. The structural curves are NaN at the linear blocks and their "last layer"
  signals read the last softmax block; ``vrp run`` records the blocks with maps in its shards'
  metadata (``attention_layers``).
- the sites are the same: ``blocks.{l}.attn_out`` is the token mixer's write (linear
  attention or softmax attention), ``blocks.{l}.attn_z`` the input of its output projection.
  Head ablation applies to the softmax blocks only.
- sampling re-runs the prompt: a linear-attention block's recurrent state cannot be cut back
  to the prompt, so the K samples do not continue from the greedy pass's cache.
"""

from __future__ import annotations

from typing import Any

from vrp.models.base import UnsupportedModelError, register
from vrp.models.qwen2vl import Qwen2VLAdapter

_MIXERS = {"full_attention": "self_attn", "linear_attention": "linear_attn"}
_OUT_PROJ = {"full_attention": "self_attn.o_proj", "linear_attention": "linear_attn.out_proj"}


@register
class Qwen35Adapter(Qwen2VLAdapter):
    model_types = ("qwen3_5",)
    family = "qwen3_5"
    continues_from_cache = False

    def layer_types(self) -> list[str]:
        types = list(self.text_config.layer_types)
        unknown = sorted(set(types) - set(_MIXERS))
        if unknown:
            raise UnsupportedModelError(f"{self.family}: unknown decoder block types {unknown} at {self.path}")
        return types

    def attention_blocks(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types()) if t == "full_attention")

    def layer_module(self, layer: int, name: str) -> Any:
        kind = self.layer_types()[layer]
        if name == "attn":
            return self.decoder_layers()[layer].get_submodule(_MIXERS[kind])
        if name == "o_proj":
            return self.decoder_layers()[layer].get_submodule(_OUT_PROJ[kind])
        return super().layer_module(layer, name)
