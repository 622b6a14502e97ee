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
from vrp.stats.auroc import percentile_ci


def mean_band(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Column means of ``values`` [n, K] ignoring NaN, with percentile bootstrap CIs (items resampled).

    Returns:
        (mean, ci_low, ci_high), each [K]; NaN where a column has no finite value, NaN CI
        where it has fewer than 2.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)  # [n, K]
    filled = np.where(ok, v, 0.0)
    count = ok.sum(axis=0)  # [K]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
    lo, hi = np.full(v.shape[1], np.nan), np.full(v.shape[1], np.nan)
    n = v.shape[0]
    if n >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        sums, counts = [], []
        for start in range(0, n_boot, 500):  # multiplicities [chunk, n] @ [n, K]: no [boot, n, K] tensor
            c = rng.multinomial(n, np.full(n, 1.0 / n), size=min(500, n_boot - start)).astype(np.float64)
            sums.append(c @ filled)
            counts.append(c @ ok)
        s, c = np.concatenate(sums), np.concatenate(counts)  # [n_boot, K]
        with np.errstate(invalid="ignore", divide="ignore"):
            boots = s / c
        for k in range(v.shape[1]):
            b = boots[:, k][np.isfinite(boots[:, k])]
            if count[k] >= 2 and b.size:
                lo[k], hi[k] = percentile_ci(b, level)
    return mean, lo, hi


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


def margin_split(run: RunData, n_boot: int = 2000) -> Split | None:
    """Truth margin per residual layer for correct vs wrong items."""
    got = curve(run, "curve.margin")
    if run.layers is not None and "margin_correct_mean" in run.layers:
        lt = run.layers
        n_c = int(run.items["correct"].sum())
        parts = {
            g: tuple(lt[f"margin_{g}_{k}"].to_numpy(dtype=np.float64) for k in ("mean", "ci_low", "ci_high"))
            for g in ("correct", "wrong")
        }
        return Split(lt["residual_layer"].to_numpy(), "residual", parts["correct"], parts["wrong"], n_c,
                     len(run.items) - n_c, "analysis/layers.parquet")  # fmt: skip
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
