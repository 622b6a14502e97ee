"""Per-layer quantities of correct vs wrong items, computed from the shards' curves.

The truth margin band comes from ``analysis/layers.parquet`` when ``vrp analyze`` has run
(the same numbers as its table); everything else (and the margin without an analysis) is
computed here with :func:`mean_band`, the same percentile bootstrap of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vrp.report.data import RunData, curve
from vrp.signals.mechanistic import mlp_share
from vrp.stats.effects import mean_ci


def mean_band(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Column means of ``values`` [n, K] ignoring NaN, with percentile bootstrap CIs (items
    resampled; :func:`vrp.stats.effects.mean_ci` seeded with ``seed``)."""
    return mean_ci(values, n_boot, level, np.random.default_rng(seed))


@dataclass(frozen=True)
class Split:
    """A per-layer quantity for correct and wrong items: mean and CI of each group."""

    x: np.ndarray  # [K] layer index (residual layer or decoder block, see ``axis``)
    axis: str  # "residual" (0 = embeddings) or "block" (0-based decoder block)
    correct: tuple[np.ndarray, np.ndarray, np.ndarray]
    wrong: tuple[np.ndarray, np.ndarray, np.ndarray]
    n_correct: int
    n_wrong: int
    source: str  # where the numbers come from, shown in the caption


def split_band(values: np.ndarray, correct: np.ndarray, axis: str, source: str, n_boot: int = 2000) -> Split:
    """Mean and CI of ``values`` [n, K] for correct and for wrong items."""
    x = np.arange(values.shape[1])
    return Split(
        x, axis, mean_band(values[correct], n_boot), mean_band(values[~correct], n_boot, seed=1),
        int(correct.sum()), int((~correct).sum()), source,
    )  # fmt: skip


def layers_split(run: RunData, prefix: str) -> Split | None:
    """The correct vs wrong bands ``{prefix}_{correct,wrong}_{mean,ci_low,ci_high}`` per residual
    layer that ``vrp analyze`` stored in ``analysis/layers.parquet``; None when it has none."""
    lt = run.layers
    if lt is None or f"{prefix}_correct_mean" not in lt:
        return None
    n_c = int(run.items["correct"].sum())
    parts = {
        g: tuple(lt[f"{prefix}_{g}_{k}"].to_numpy(dtype=np.float64) for k in ("mean", "ci_low", "ci_high"))
        for g in ("correct", "wrong")
    }
    return Split(lt["residual_layer"].to_numpy(), "residual", parts["correct"], parts["wrong"], n_c,
                 len(run.items) - n_c, "analysis/layers.parquet")  # fmt: skip


def margin_split(run: RunData, n_boot: int = 2000) -> Split | None:
    """Truth margin per residual layer for correct vs wrong items."""
    stored = layers_split(run, "margin")
    if stored is not None:  # no need to read the shards' margin curves then
        return stored
    got = curve(run, "curve.margin")
    if got is None:
        return None
    return split_band(got[0], got[1], "residual", "shards (curve.margin)", n_boot)


def curve_split(run: RunData, key: str, n_boot: int = 2000) -> Split | None:
    """A per-block structural curve (e.g. ``curve.attn_entropy``) for correct vs wrong items."""
    got = curve(run, key)
    return None if got is None else split_band(got[0], got[1], "block", f"shards ({key})", n_boot)


def mlp_share_split(run: RunData, n_boot: int = 2000) -> Split | None:
    """Per decoder block, the MLP's share ``|mlp| / (|attn| + |mlp|)`` of the margin written there."""
    a, m = curve(run, "curve.attn_contrib"), curve(run, "curve.mlp_contrib")
    if a is None or m is None:
        return None
    return split_band(mlp_share(a[0], m[0]), a[1], "block", "shards (curve.attn_contrib, curve.mlp_contrib)", n_boot)
