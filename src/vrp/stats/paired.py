"""Comparing the AUROCs of two signals on the same items: DeLong's test and a paired bootstrap.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, in the O(n log n) form of
Sun & Xu (2014), IEEE Signal Processing Letters 21:1389-1393. The structural components
("placements") of a positive ``x_i`` and a negative ``y_j`` are

    V10_i = (#{y < x_i} + #{y = x_i} / 2) / N        V01_j = (#{x > y_j} + #{x = y_j} / 2) / P

(Sun & Xu get them from midranks; here from binary searches in the sorted other class, which
is the same count). AUROC = mean(V10) = mean(V01), and the covariance of the AUROCs of signals
``r, s`` is ``S10[r, s] / P + S01[r, s] / N`` with ``S10``, ``S01`` the sample covariances
(ddof = 1) of the placements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from vrp.stats._base import NAN, Prepared, Result, check_level, constant_reason, one_class_reason, prepare
from vrp.stats.auroc import _Kernel, bootstrap_pvalue, bootstrap_twice_u, percentile_ci

_NAMES = ("a", "b")
_ARGS = ("scores_a", "scores_b")


@dataclass(frozen=True)
class DelongResult(Result):
    """DeLong test of AUROC(a) = AUROC(b) on the same items; ``diff`` = a - b."""

    auroc_a: float
    auroc_b: float
    diff: float
    se: float
    z: float
    p_value: float
    undefined: str | None
    n: int = 0
    n_pos: int = 0
    n_dropped: int = 0


@dataclass(frozen=True)
class PairedResult(Result):
    """Paired comparison of two signals: ``diff`` = AUROC(a) - AUROC(b) with its bootstrap CI.

    ``p_bootstrap`` inverts the percentile interval (the smallest alpha at which the
    1 - alpha interval excludes 0); ``p_delong`` is DeLong's test (NaN with the reason in
    ``delong_undefined`` when its variance is 0, e.g. two signals that rank the items alike).
    """

    diff: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_delong: float
    n: int
    undefined: str | None
    auroc_a: float = NAN
    auroc_b: float = NAN
    n_pos: int = 0
    n_dropped: int = 0
    n_boot: int = 0
    n_boot_skipped: int = 0
    level: float = 0.95
    stratified: bool = True
    delong_undefined: str | None = None


def placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong structural components: ``pos`` [k, P], ``neg`` [k, N] -> (V10 [k, P], V01 [k, N])."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    v10, v01 = np.empty(pos.shape), np.empty(neg.shape)
    for r in range(pos.shape[0]):
        sn, sp = np.sort(neg[r]), np.sort(pos[r])
        below = np.searchsorted(sn, pos[r], "left") + np.searchsorted(sn, pos[r], "right")  # 2 x (# below + ties/2)
        v10[r] = below / (2.0 * n_neg)
        not_above = np.searchsorted(sp, neg[r], "left") + np.searchsorted(sp, neg[r], "right")
        v01[r] = (2.0 * n_pos - not_above) / (2.0 * n_pos)
    return v10, v01


def delong_cov(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs [k] and their DeLong covariance matrix [k, k] (needs >= 2 items per class)."""
    v10, v01 = placements(pos, neg)
    cov = np.atleast_2d(np.cov(v10)) / pos.shape[1] + np.atleast_2d(np.cov(v01)) / neg.shape[1]
    return v10.mean(axis=1), cov


def _class_size_reason(p: Prepared) -> str | None:
    n_neg = p.n - p.n_pos
    if min(p.n_pos, n_neg) < 2:
        return f"DeLong needs at least 2 items of each class (have {p.n_pos} correct, {n_neg} incorrect)"
    return None


def delong_se(scores: ArrayLike, labels: ArrayLike) -> float:
    """DeLong standard error of one signal's AUROC; NaN when undefined.

    Args:
        scores: [n] signal values (non-finite items dropped).
        labels: [n] bool or 0/1.
    """
    p = prepare([scores], labels)
    if p.undefined or one_class_reason(p) or constant_reason(p) or _class_size_reason(p):
        return NAN
    _, cov = delong_cov(p.scores[:, p.y], p.scores[:, ~p.y])
    return math.sqrt(max(float(cov[0, 0]), 0.0))


def _delong(p: Prepared) -> DelongResult:
    common = dict(n=p.n, n_pos=p.n_pos, n_dropped=p.n_dropped)
    reason = p.undefined or one_class_reason(p) or constant_reason(p, _NAMES) or _class_size_reason(p)
    if reason:
        return DelongResult(NAN, NAN, NAN, NAN, NAN, NAN, reason, **common)
    aucs, cov = delong_cov(p.scores[:, p.y], p.scores[:, ~p.y])
    a, b = float(aucs[0]), float(aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    # Identical rankings give exactly 0; allow for rounding in the cancellation otherwise.
    if var <= 1e-12 * float(cov[0, 0] + cov[1, 1]) or var <= 0.0:
        why = "the AUROC difference has zero DeLong variance (the signals order the items alike, or both separate the classes perfectly)"
        return DelongResult(NAN, NAN, NAN, NAN, NAN, NAN, why, **common)  # numbers NaN whenever undefined
    se = math.sqrt(var)
    z = (a - b) / se
    return DelongResult(a, b, a - b, se, z, float(2 * norm.sf(abs(z))), None, **common)


def delong(scores_a: ArrayLike, scores_b: ArrayLike, labels: ArrayLike) -> DelongResult:
    """DeLong's test for two correlated AUROCs (same items, same labels).

    Items where either score is non-finite, or the label is missing, are dropped.

    Args:
        scores_a: [n] first signal.
        scores_b: [n] second signal.
        labels: [n] bool or 0/1.

    Returns:
        ``DelongResult``; undefined for no usable item, one class, fewer than 2 items of a class,
        a constant signal, or a zero variance of the difference.
    """
    return _delong(prepare([scores_a, scores_b], labels, _ARGS))


def paired_auroc_diff(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
    n_jobs: int = 1,
) -> PairedResult:
    """AUROC(a) - AUROC(b) with a paired bootstrap CI (both signals on the same resampled items) and DeLong's p.

    Args:
        scores_a: [n] first signal.
        scores_b: [n] second signal.
        labels: [n] bool or 0/1 (items with a non-finite score in either signal are dropped).
        n_boot: bootstrap resamples.
        level: two-sided confidence level.
        seed: the same seed gives the same resamples as ``auroc_ci`` on these items.
        stratified: resample within each class (default), else plain case resampling
            (single-class resamples skipped and counted).
        n_jobs: threads (-1: all cores). The result does not depend on it.

    Returns:
        ``PairedResult``; undefined (NaN) for no usable item, one class, or a constant signal.
    """
    check_level(level)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    p = prepare([scores_a, scores_b], labels, _ARGS)
    common = dict(n_pos=p.n_pos, n_dropped=p.n_dropped, level=level, stratified=stratified)
    reason = p.undefined or one_class_reason(p) or constant_reason(p, _NAMES)
    if reason:
        return PairedResult(NAN, NAN, NAN, NAN, NAN, p.n, reason, **common)
    y = p.y
    n_pos, n_neg = p.n_pos, p.n - p.n_pos
    kernels = [_Kernel(s[y], s[~y]) for s in p.scores]
    auc_a, auc_b = (k.observed() / (2.0 * n_pos * n_neg) for k in kernels)
    boot_seq = np.random.SeedSequence(seed).spawn(2)[0]
    twice_u, pn = bootstrap_twice_u(kernels, n_pos, n_neg, n_boot, boot_seq, stratified, n_jobs)  # [B, 2], [B]
    ok = pn > 0
    d = (twice_u[ok, 0] - twice_u[ok, 1]) / (2.0 * pn[ok])  # [B used]
    lo, hi = percentile_ci(d, level)
    used = d.size
    p_boot = bootstrap_pvalue(d)
    dl = _delong(p)
    return PairedResult(
        auc_a - auc_b,
        lo,
        hi,
        p_boot,
        dl.p_value,
        p.n,
        None,
        auroc_a=auc_a,
        auroc_b=auc_b,
        n_boot=used,
        n_boot_skipped=n_boot - used,
        delong_undefined=dl.undefined,
        **common,
    )


def auroc_vs_chance(
    scores: ArrayLike, labels: ArrayLike, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> PairedResult:
    """AUROC(scores) - 0.5: one signal against chance, in the shape of :func:`paired_auroc_diff`.

    The bootstrap draws the same stratified resamples as ``auroc_ci(scores, labels, seed=seed)``
    (so its CI shifted by 0.5 is this one); ``p_bootstrap`` inverts the percentile interval of
    the difference and ``p_delong`` is the two-sided normal test ``z = (AUROC - 0.5) / SE`` with
    DeLong's standard error (NaN, reason in ``delong_undefined``, when the SE is 0 or a class has
    fewer than 2 items). ``auroc_b`` is 0.5.
    """
    check_level(level)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    p = prepare([scores], labels)
    common = dict(n_pos=p.n_pos, n_dropped=p.n_dropped, level=level, stratified=True)
    reason = p.undefined or one_class_reason(p) or constant_reason(p)
    if reason:
        return PairedResult(NAN, NAN, NAN, NAN, NAN, p.n, reason, **common)
    y = p.y
    n_pos, n_neg = p.n_pos, p.n - p.n_pos
    kernel = _Kernel(p.scores[0, y], p.scores[0, ~y])
    auc = kernel.observed() / (2.0 * n_pos * n_neg)
    boot_seq = np.random.SeedSequence(seed).spawn(2)[0]  # auroc_ci's bootstrap stream
    twice_u, pn = bootstrap_twice_u([kernel], n_pos, n_neg, n_boot, boot_seq, True)
    d = twice_u[:, 0] / (2.0 * pn) - 0.5  # [B]
    lo, hi = percentile_ci(d, level)
    why = _class_size_reason(p)
    p_delong = NAN
    if why is None:
        _, cov = delong_cov(p.scores[:, y], p.scores[:, ~y])
        se = math.sqrt(max(float(cov[0, 0]), 0.0))
        if se > 0:
            p_delong = float(2 * norm.sf(abs(auc - 0.5) / se))
        else:
            why = "DeLong's standard error is 0 (the signal separates the classes perfectly)"
    return PairedResult(auc - 0.5, lo, hi, bootstrap_pvalue(d), p_delong, p.n, None, auroc_a=auc, auroc_b=0.5,
                        n_boot=int(d.size), delong_undefined=why, **common)  # fmt: skip
