"""Paired effects of an intervention on the same items, with paired-bootstrap CIs.

An intervention is measured on the items the clean model answered: each item gives a pair
(clean value, intervened value). The paired bootstrap resamples items (keeping each pair
together), so the CI accounts for the items' correlation between the two conditions -- the
unpaired difference of two binomial proportions would overstate the uncertainty.

Resampling by multinomial counts: a resample's mean of ``d`` is ``counts @ d / n`` with
``counts ~ Multinomial(n, 1/n)``, drawn in blocks to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vrp.stats._base import NAN, Result, check_level
from vrp.stats.auroc import bootstrap_pvalue, percentile_ci

_BLOCK_CELLS = 4_000_000  # resamples x items per block of multinomial counts


@dataclass(frozen=True)
class EffectResult(Result):
    """``estimate`` with a percentile CI from ``n_boot`` paired resamples of ``n`` items.

    ``p``: two-sided paired-bootstrap p-value of "no effect" (twice the smaller tail fraction
    of resampled estimates on either side of 0, with the +1 correction).
    """

    estimate: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    n_dropped: int
    level: float
    undefined: str | None = None


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` items as multiplicities: blocks of ``[b, n]`` float64 counts
    ``~ Multinomial(n, 1/n)``, ``n_boot`` rows in all (the stream does not depend on the blocking)."""
    block = max(1, _BLOCK_CELLS // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # [b, n]
        done += b


def _counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    return resample_counts(n, n_boot, np.random.default_rng(seed))


def mean_ci(
    values: ArrayLike, n_boot: int, level: float = 0.95, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means of ``values`` ``[n, K]`` ignoring NaN, with percentile bootstrap CIs
    (items resampled).

    Returns:
        (mean, ci_low, ci_high), each ``[K]``; mean NaN where a column has no finite value,
        CI NaN where it has fewer than 2.
    """
    check_level(level)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)  # [n, K]
    filled = np.where(ok, v, 0.0)
    count = ok.sum(axis=0)  # [K]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
    lo, hi = np.full(v.shape[1], NAN), np.full(v.shape[1], NAN)
    n = v.shape[0]
    if n < 2 or n_boot <= 0:
        return mean, lo, hi
    rng = rng if rng is not None else np.random.default_rng(0)
    sums, counts = [], []
    for c in resample_counts(n, n_boot, rng):  # multiplicities [b, n] @ [n, K]: no [boot, n, K] tensor
        sums.append(c @ filled)
        counts.append(c @ ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = np.concatenate(sums) / np.concatenate(counts)  # [n_boot, K]
    for k in range(v.shape[1]):
        b = boots[:, k][np.isfinite(boots[:, k])]
        if count[k] >= 2 and b.size:
            lo[k], hi[k] = percentile_ci(b, level)
    return mean, lo, hi


def _pairs(*arrays: ArrayLike) -> tuple[list[np.ndarray], int]:
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"paired arrays must have the same length, got {[a.size for a in arrs]}")
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return [a[ok] for a in arrs], int((~ok).sum())


def paired_mean_diff(
    before: ArrayLike, after: ArrayLike, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> EffectResult:
    """Mean of ``after - before`` over items (e.g. accuracy change as 0/1 pairs) with a paired-bootstrap CI.

    Items with a non-finite value in either array are dropped and counted. Undefined (NaN)
    when no item is left.
    """
    check_level(level)
    (b, a), dropped = _pairs(before, after)
    n = b.size
    if n == 0:
        return EffectResult(NAN, NAN, NAN, NAN, 0, dropped, level, "no item with both values")
    d = a - b
    est = float(d.mean())
    if n_boot == 0:
        return EffectResult(est, NAN, NAN, NAN, n, dropped, level)
    boot = np.concatenate([c @ d / n for c in _counts(n, n_boot, seed)])
    lo, hi = percentile_ci(boot, level)
    return EffectResult(est, lo, hi, bootstrap_pvalue(boot), n, dropped, level)


def recovered_fraction(
    clean: ArrayLike,
    corrupt: ArrayLike,
    patched: ArrayLike,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> EffectResult:
    """Fraction of the clean-vs-corrupt gap that patching restores, as a ratio of means:
    ``mean(patched - corrupt) / mean(clean - corrupt)`` (1 = fully restored, 0 = no effect).

    A ratio of means rather than a mean of per-item ratios: items whose corruption barely
    moved the margin would otherwise dominate with huge, noisy ratios. The CI resamples items.
    ``p`` tests a recovery of 0. Undefined when the mean gap is 0 (the corruption did nothing).
    """
    check_level(level)
    (c, x, pt), dropped = _pairs(clean, corrupt, patched)
    n = c.size
    if n == 0:
        return EffectResult(NAN, NAN, NAN, NAN, 0, dropped, level, "no item with all three values")
    gap, gain = c - x, pt - x
    if gap.mean() == 0:
        return EffectResult(NAN, NAN, NAN, NAN, n, dropped, level, "the corruption did not change the mean margin")
    est = float(gain.mean() / gap.mean())
    if n_boot == 0:
        return EffectResult(est, NAN, NAN, NAN, n, dropped, level)
    parts = []
    for cnt in _counts(n, n_boot, seed):
        den = cnt @ gap
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(np.where(den != 0, (cnt @ gain) / den, np.nan))
    boot = np.concatenate(parts)
    boot = boot[np.isfinite(boot)]
    lo, hi = percentile_ci(boot, level)
    return EffectResult(est, lo, hi, bootstrap_pvalue(boot), n, dropped, level)
