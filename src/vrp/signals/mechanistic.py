"""Mechanistic signals (SPEC §4): truth-margin curves from the logit lens and the MLP vs
attention share of margin growth. Pure numpy over the capture boundary's ``LensReadout``
arrays and the captured sub-block writes.

Layer axis: residual index, 0 = embedding output, i = output of the i-th captured block.
Units: logits (nats of unnormalized log-probability). Direction: a higher truth margin
means the layer's readout favours a gold answer more; a positive margin at the last layer
means the model's own first answer token is a gold one.
"""

from __future__ import annotations

import numpy as np


def truth_margin(ref_logits: np.ndarray, rival_logits: np.ndarray) -> np.ndarray:
    """``M_l = max_r LL_l[r] - max_{y not a reference} LL_l[y]``.

    Args:
        ref_logits: ``[L + 1, R]`` lens logits of the reference tokens.
        rival_logits: ``[L + 1]`` best non-reference lens logit per layer.

    Returns:
        ``[L + 1]`` margin per layer.
    """
    ref = np.asarray(ref_logits, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] == 0:
        raise ValueError(f"ref_logits must be [layers, refs>=1], got shape {ref.shape}")
    return ref.max(axis=1) - np.asarray(rival_logits, dtype=np.float64)


def positive_from(margin: np.ndarray) -> int:
    """First layer from which the margin is > 0 at every later layer; ``len(margin)`` (one
    past the last layer) if the last is not, so that "earlier" is always "lower"."""
    m = np.asarray(margin)
    if m.size == 0 or m[-1] <= 0:
        return int(m.size)
    nonpos = np.flatnonzero(m <= 0)
    return int(nonpos[-1] + 1) if nonpos.size else 0


def peak_layer(margin: np.ndarray) -> int:
    """Layer of the largest margin (first one on ties)."""
    return int(np.argmax(np.asarray(margin)))


def sublayer_contributions(
    attn_write: np.ndarray, mlp_write: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linearized margin change written by each block's attention and MLP sub-block.

    Args:
        attn_write: ``[L, d]`` attention outputs added to the residual at the decision position.
        mlp_write: ``[L, d]`` MLP outputs likewise.
        direction: ``[d]`` gradient of (logit[y*] - logit[rival]) w.r.t. the last residual.

    Returns:
        (attention, MLP) contributions ``[L]`` each, in logits.
    """
    d = np.asarray(direction, dtype=np.float64)
    return np.asarray(attn_write, dtype=np.float64) @ d, np.asarray(mlp_write, dtype=np.float64) @ d


def mlp_share(attn_contrib: np.ndarray, mlp_contrib: np.ndarray) -> np.ndarray:
    """Per layer ``|c_mlp| / (|c_attn| + |c_mlp|)`` (NaN where both are 0)."""
    a, m = np.abs(np.asarray(attn_contrib, float)), np.abs(np.asarray(mlp_contrib, float))
    tot = a + m
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, m / np.where(tot > 0, tot, 1.0), np.nan)


def mlp_share_of_growth(attn_contrib: np.ndarray, mlp_contrib: np.ndarray) -> float:
    """MLP fraction of all positive margin growth over layers (NaN if there is none)."""
    a = np.clip(np.asarray(attn_contrib, float), 0, None).sum()
    m = np.clip(np.asarray(mlp_contrib, float), 0, None).sum()
    return float(m / (a + m)) if a + m > 0 else float("nan")
