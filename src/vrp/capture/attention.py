"""Capture attention rows without giving up SDPA.

A transformers attention function named ``vrp_capture`` is registered once. It computes
the layer's output with the SDPA kernel exactly as the stock ``sdpa`` implementation does
and, while a :class:`AttentionRecorder` is active, also computes the attention
probabilities of the **last query row only** (the decision position during prefill, the
new token during decode) over all keys: ``softmax(q k^T * scaling [soft-capped] + mask)``,
with GQA key heads repeated to the query heads. That row costs O(heads x keys), not the
O(heads x queries x keys) of eager ``output_attentions``.

Masks: the name is also registered with transformers' mask interface using the SDPA mask
builder, so the function receives the same boolean (True = attend) mask SDPA gets, with
padding, causal / prefix-LM structure and sliding windows already applied; ``None`` means
no masking is needed, and for the last query row that means every key is visible.

Soft-capped attention (Gemma-2 style ``softcap``) cannot run in SDPA; there the output is
computed with the eager formula, and the fallback is logged once per model.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

IMPL_NAME = "vrp_capture"
_active: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "vrp_attention_recorder", default=None
)
_registered = False
_warned_softcap: set[int] = set()


class AttentionRecorder:
    """Collects, per forward call, the last query row's attention probabilities per layer.

    ``rows[layer_idx]`` is a list with one tensor per forward call (prefill, then each
    decode step): ``[batch, heads, keys]`` float32 on the model's device.
    """

    def __init__(self, layers: set[int] | None = None):
        self.layers = layers
        self.rows: dict[int, list[torch.Tensor]] = {}

    def wants(self, layer_idx: int) -> bool:
        return self.layers is None or layer_idx in self.layers

    def add(self, layer_idx: int, row: torch.Tensor) -> None:
        self.rows.setdefault(layer_idx, []).append(row)

    def observe(self, layer_idx: int, query, key, attention_mask, scaling: float, softcap: float | None) -> None:
        """Called by ``vrp_capture`` for every wanted layer with its post-RoPE query and key
        (``[batch, heads, q, head_dim]``, ``[batch, kv_heads, k, head_dim]``); records the
        last query row's probabilities. Subclasses may keep something else."""
        self.add(layer_idx, last_row_probs(query, key, attention_mask, scaling, softcap))


@contextmanager
def recording(recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)


def _scores(query: torch.Tensor, key: torch.Tensor, attention_mask, scaling: float, softcap: float | None):
    """Masked attention scores ``q k^T * scaling`` (soft-capped), GQA keys repeated to the query heads."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
    return _cap_and_mask(torch.matmul(query, key.transpose(-1, -2)) * scaling, attention_mask, softcap)


def _cap_and_mask(scores: torch.Tensor, attention_mask, softcap: float | None) -> torch.Tensor:
    """Soft-cap scaled scores ``[b, h, q, k]`` and apply the mask's last q rows."""
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        m = attention_mask[:, :, -scores.shape[2] :, : scores.shape[3]]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.to(scores.dtype)
    return scores


def last_row_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention probabilities of the last query row over all keys, in float32.

    Args:
        query: [batch, heads, q, head_dim] (after RoPE).
        key: [batch, kv_heads, k, head_dim] (after RoPE; GQA kv_heads divides heads).
        attention_mask: None, boolean [batch|1, 1|heads, q, k] (True = attend), or additive float.
        scaling: the score scale (usually head_dim ** -0.5).
        softcap: Gemma-2 style attention logit soft-capping, or None.

    Returns:
        [batch, heads, k] float32 rows that sum to 1.
    """
    b, h, _, d = query.shape
    kv = key.shape[1]
    # GQA without repeating the keys: the query heads of one kv head form the row axis.
    q = query[:, :, -1, :].float().reshape(b, kv, h // kv, d)  # [b, kv, rep, d]
    scores = torch.matmul(q, key.float().transpose(-1, -2)).reshape(b, h, 1, -1) * scaling  # [b, h, 1, k]
    return torch.softmax(_cap_and_mask(scores, attention_mask, softcap), dim=-1)[:, :, 0, :]


def _eager_output(module, query, key, value, attention_mask, scaling, softcap):
    v = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    probs = torch.softmax(_scores(query, key, attention_mask, scaling, softcap), dim=-1, dtype=torch.float32).to(
        query.dtype
    )
    return torch.matmul(probs, v).transpose(1, 2).contiguous()


def capture_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The registered ``vrp_capture`` attention: SDPA output plus, when recording, the last row."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if softcap is None:
        out, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    else:
        if id(module) not in _warned_softcap:
            _warned_softcap.add(id(module))
            log.warning(
                "attention soft-capping: layer %s runs the eager formula (SDPA has no soft-cap)",
                getattr(module, "layer_idx", "?"),
            )
        out = _eager_output(module, query, key, value, attention_mask, scaling, softcap)
    rec = _active.get()
    layer_idx = getattr(module, "layer_idx", None)
    if rec is not None and layer_idx is not None and rec.wants(layer_idx):
        rec.observe(layer_idx, query, key, attention_mask, scaling, softcap)
    return out, None


def register() -> None:
    """Register ``vrp_capture`` with transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPL_NAME, capture_attention_forward)
    AttentionMaskInterface.register(IMPL_NAME, sdpa_mask)
    _registered = True
