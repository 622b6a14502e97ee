"""Pearson and Spearman correlation of two continuous variables, with Fisher-z confidence intervals.

- Pearson r: CI ``tanh(atanh(r) +/- z_{(1+level)/2} / sqrt(n - 3))`` (what
  ``scipy.stats.pearsonr(x, y).confidence_interval(level)`` returns); p-value of H0: r = 0 by the
  t-test with n - 2 degrees of freedom (scipy's, exact for normal data).
- Spearman rho: Pearson r of the ranks (ties averaged; ``scipy.stats.spearmanr``); CI on Fisher's z
  with the standard error ``sqrt(1.06 / (n - 3))`` of Fieller, Hartley & Pearson (1957), Biometrika
  44:470-481; p-value by the t-test with n - 2 degrees of freedom (scipy's).

Items where either value is NaN or infinite are dropped (``n_dropped``). Degenerate data (fewer
than 4 items, a constant variable) is not an error: the result is undefined with the reason.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

from vrp.stats._base import NAN, check_level
from vrp.stats.association import CorrResult

FIELLER_VAR = 1.06  # Spearman's Fisher-z variance numerator (Fieller, Hartley & Pearson 1957)


def _clean(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], int((~ok).sum())


def _reason(x: np.ndarray, y: np.ndarray) -> str | None:
    if x.size < 4:
        return f"too few items for the Fisher-z CI (n = {x.size}, need at least 4)"
    for name, v in (("x", x), ("y", y)):
        if (v == v[0]).all():
            return f"{name} is constant ({v[0]:g}) over the {v.size} items: no correlation"
    return None


def _corr(x: np.ndarray, y: np.ndarray, level: float, var: float, n_dropped: int) -> CorrResult:
    n = x.size
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.clip(xc @ yc / math.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))
    if abs(r) == 1.0:
        return CorrResult(r, r, r, 0.0, n, None, n_dropped, level)
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(var / (n - 3))
    lo, hi = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return CorrResult(r, lo, hi, float(2 * student_t.sf(abs(t), n - 2)), n, None, n_dropped, level)


def pearson(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> CorrResult:
    """Pearson r of ``x`` [n] and ``y`` [n] with its Fisher-z CI and t-test p-value."""
    check_level(level)
    x, y, dropped = _clean(x, y)
    reason = _reason(x, y)
    if reason:
        return CorrResult(NAN, NAN, NAN, NAN, x.size, reason, dropped, level)
    return _corr(x, y, level, 1.0, dropped)


def spearman(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> CorrResult:
    """Spearman rho of ``x`` [n] and ``y`` [n] (ties averaged) with its Fisher-z CI (Fieller's SE) and p-value."""
    check_level(level)
    x, y, dropped = _clean(x, y)
    reason = _reason(x, y)
    if reason:
        return CorrResult(NAN, NAN, NAN, NAN, x.size, reason, dropped, level)
    return _corr(rankdata(x), rankdata(y), level, FIELLER_VAR, dropped)
