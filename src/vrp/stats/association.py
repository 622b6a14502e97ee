"""Point-biserial correlation between a signal and binary labels, with a Fisher-z CI."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm
from scipy.stats import t as student_t

from vrp.stats._base import NAN, Result, check_level, constant_reason, dropped_note, one_class_reason, prepare


@dataclass(frozen=True)
class CorrResult(Result):
    """Correlation ``r`` with its CI and two-sided p-value (H0: r = 0)."""

    r: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    undefined: str | None
    n_dropped: int = 0
    level: float = 0.95


def point_biserial(scores: ArrayLike, labels: ArrayLike, level: float = 0.95) -> CorrResult:
    """Point-biserial r (Pearson r between the signal and the 0/1 label).

    CI: Fisher z-transform, ``tanh(atanh(r) +/- z_{(1+level)/2} / sqrt(n - 3))``. p-value: the
    t-test with n - 2 degrees of freedom (what ``scipy.stats.pointbiserialr`` reports).

    Args:
        scores: [n] signal values (non-finite items dropped).
        labels: [n] bool or 0/1 (NaN / None = missing, dropped).
        level: two-sided confidence level.

    Returns:
        ``CorrResult``; undefined (NaN) for no usable item, one class, a constant signal, or
        fewer than 4 items (the Fisher CI needs n > 3).
    """
    check_level(level)
    p = prepare([scores], labels)
    reason = p.undefined or one_class_reason(p) or constant_reason(p)
    if not reason and p.n < 4:
        reason = f"too few items for the Fisher-z CI (n = {p.n}, need at least 4){dropped_note(p)}"
    if reason:
        return CorrResult(NAN, NAN, NAN, NAN, p.n, reason, p.n_dropped, level)
    x = p.scores[0] - p.scores[0].mean()  # [n]
    yc = p.y - p.y.mean()  # [n]
    r = float(np.clip(x @ yc / math.sqrt((x @ x) * (yc @ yc)), -1.0, 1.0))
    n = p.n
    if abs(r) == 1.0:
        lo = hi = r
        pval = 0.0
    else:
        zc = float(norm.ppf(0.5 + level / 2)) / math.sqrt(n - 3)
        lo, hi = math.tanh(math.atanh(r) - zc), math.tanh(math.atanh(r) + zc)
        t = r * math.sqrt((n - 2) / (1.0 - r * r))
        pval = float(2 * student_t.sf(abs(t), n - 2))
    return CorrResult(r, lo, hi, pval, n, None, p.n_dropped, level)
