"""Selective prediction: risk-coverage curve, AURC, and calibration (ECE, reliability diagram).

Risk-coverage (Geifman & El-Yaniv, NeurIPS 2017): keep the ``k`` most confident items,
``coverage = k / n``, ``risk = errors among them / k``. AURC is the mean risk over the ``n``
coverage levels ``k = 1..n``,

    AURC = (1/n) sum_k risk(k / n),

the empirical (plug-in) area under the risk-coverage curve of AURC / E-AURC in Geifman,
Uziel & El-Yaniv (ICLR 2019). (Implementations that integrate with the trapezoid rule over
distinct thresholds differ from it by O(1/n).) The optimal AURC (all correct items first) is
``(1/n) sum_{k > c} (k - c) / k`` for ``c`` correct items, which tends to their
``r + (1 - r) ln(1 - r)`` (``r`` = error rate); ``e_aurc`` = AURC - optimal >= 0.

Ties in confidence are one block: no order within it is preferred, so inside a block the
error count is the expectation over a uniformly random order of the tied items (linear in
``k`` across the block). The curve therefore does not depend on the input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from vrp.stats._base import NAN, Result, constant_reason, dropped_note, frozen_array, one_class_reason, prepare

_STRATEGIES = ("uniform", "quantile")


@dataclass(frozen=True, eq=False)
class RiskCoverage(Result):
    """Risk-coverage curve; arrays are empty when undefined.

    ``threshold[k - 1]`` is the confidence of the k-th most confident item.
    """

    coverage: np.ndarray  # [n] k / n
    risk: np.ndarray  # [n]
    aurc: float
    undefined: str | None
    optimal_aurc: float = NAN
    e_aurc: float = NAN
    threshold: np.ndarray = field(default_factory=lambda: frozen_array([]))  # [n]
    error_rate: float = NAN
    n: int = 0
    n_dropped: int = 0


@dataclass(frozen=True, eq=False)
class Calibration(Result):
    """Reliability-diagram data and ECE / MCE. Empty bins: count 0, NaN confidence and accuracy."""

    ece: float
    mce: float
    bin_lower: np.ndarray  # [B]
    bin_upper: np.ndarray  # [B]
    count: np.ndarray  # [B] int
    mean_confidence: np.ndarray  # [B]
    accuracy: np.ndarray  # [B]
    undefined: str | None
    n: int = 0
    n_dropped: int = 0
    n_bins: int = 15
    strategy: str = "uniform"


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> RiskCoverage:
    """Risk-coverage curve, AURC, optimal AURC and e-AURC of a confidence signal.

    Args:
        confidence: [n] higher = more confident (non-finite items dropped).
        correct: [n] bool or 0/1 (NaN / None = missing, dropped).

    Returns:
        ``RiskCoverage``; undefined for no usable item, one class (every order has the same
        risk), or a constant confidence (no order at all).
    """
    p = prepare([confidence], correct, ["confidence"])
    reason = p.undefined or one_class_reason(p) or constant_reason(p)
    if reason:
        empty = frozen_array([])
        return RiskCoverage(empty, empty, NAN, reason, threshold=empty, n=p.n, n_dropped=p.n_dropped)
    n = p.n
    order = np.argsort(-p.scores[0], kind="stable")
    conf = p.scores[0][order]  # [n] descending
    cum_err = np.concatenate([[0.0], np.cumsum(~p.y[order])])  # [n + 1] errors among the first k
    k = np.arange(1, n + 1)  # [n]
    new_block = np.concatenate([[True], conf[1:] != conf[:-1]])  # [n]
    starts = np.flatnonzero(new_block)  # [n_blocks] items before each block
    ends = np.concatenate([starts[1:], [n]])  # [n_blocks] items up to the end of each block
    blk = np.cumsum(new_block) - 1  # [n] block of the k-th item
    a, b = starts[blk], ends[blk]
    errors = cum_err[a] + (k - a) * (cum_err[b] - cum_err[a]) / (b - a)  # [n] expected errors among the top k
    risk = errors / k
    n_correct = p.n_pos
    optimal = float(np.mean(np.maximum(k - n_correct, 0) / k))
    aurc_value = float(risk.mean())
    return RiskCoverage(
        frozen_array(k / n),
        frozen_array(risk),
        aurc_value,
        None,
        optimal_aurc=optimal,
        e_aurc=aurc_value - optimal,
        threshold=frozen_array(conf),
        error_rate=1.0 - n_correct / n,
        n=n,
        n_dropped=p.n_dropped,
    )


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """AURC of ``risk_coverage(confidence, correct)``; NaN when undefined."""
    return risk_coverage(confidence, correct).aurc


def calibration(prob: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: str = "uniform") -> Calibration:
    """Expected / maximum calibration error and reliability-diagram bins of a probability signal.

    Bins are right-closed ``(lower, upper]`` with the first also holding its lower edge (the
    assignment of ``sklearn.calibration.calibration_curve``). ``uniform``: equal widths on
    [0, 1]; ``quantile``: edges at quantiles of ``prob`` (tied edges leave empty bins).
    ``ECE = sum_b (count_b / n) |accuracy_b - mean_confidence_b|``, ``MCE = max_b |...|``
    over non-empty bins. A constant probability or a single class is fine here (the question
    is only whether stated probabilities match frequencies).

    Args:
        prob: [n] predicted probability of being correct, in [0, 1] (non-finite items dropped).
        correct: [n] bool or 0/1 (NaN / None = missing, dropped).
        n_bins: number of bins B.
        strategy: "uniform" or "quantile".

    Returns:
        ``Calibration``; undefined (NaN, bin arrays NaN / count 0) for no usable item or
        probabilities outside [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    p = prepare([prob], correct, ["prob"])
    x, y = p.scores[0], p.y
    reason = p.undefined
    if not reason and (x.min() < 0 or x.max() > 1):
        reason = f"probabilities outside [0, 1] (min {x.min():.6g}, max {x.max():.6g}){dropped_note(p)}"
    common = dict(n=p.n, n_dropped=p.n_dropped, n_bins=n_bins, strategy=strategy)
    if reason:
        edges = np.linspace(0.0, 1.0, n_bins + 1) if strategy == "uniform" else np.full(n_bins + 1, NAN)
        nan_b = frozen_array(np.full(n_bins, NAN))
        zero = frozen_array(np.zeros(n_bins, np.int64), np.int64)
        return Calibration(
            NAN, NAN, frozen_array(edges[:-1]), frozen_array(edges[1:]), zero, nan_b, nan_b, reason, **common
        )
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)  # [B + 1]
    else:
        edges = np.percentile(x, np.linspace(0.0, 100.0, n_bins + 1))
    bins = np.searchsorted(edges[1:-1], x)  # [n] in 0..B-1
    count = np.bincount(bins, minlength=n_bins)  # [B]
    conf_sum = np.bincount(bins, weights=x, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=y.astype(float), minlength=n_bins)
    filled = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(filled, conf_sum / count, NAN)
        acc = np.where(filled, acc_sum / count, NAN)
    gap = np.abs(acc - mean_conf)[filled]
    ece = float(np.sum(count[filled] / p.n * gap))
    return Calibration(
        ece,
        float(gap.max()),
        frozen_array(edges[:-1]),
        frozen_array(edges[1:]),
        frozen_array(count, np.int64),
        frozen_array(mean_conf),
        frozen_array(acc),
        None,
        **common,
    )
