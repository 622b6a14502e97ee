"""AUROC of a signal against binary labels, with a bootstrap CI and a permutation p-value.

AUROC is the Mann-Whitney probability that a random positive scores above a random negative,
ties counted 1/2: ``U / (n_pos * n_neg)``. Exact integer arithmetic on ``2U`` throughout.

Bootstrap (vectorized). A resample is represented by per-item multiplicities ``c`` drawn as
a multinomial (``bincount`` of uniform indices, one row per resample). With the negatives
sorted by score and their cumulative multiplicity ``C`` (``C[k]`` = resampled negatives among
the ``k`` lowest), a positive whose score has ``lo`` negatives strictly below and ``hi``
negatives at or below contributes ``C[lo] + C[hi]`` to ``2U`` of that resample, so

    2U_b = sum_i c_pos[b, i] * (C_b[lo_i] + C_b[hi_i])        # [n_boot, n_pos] matrix ops

which is O(n) per resample with no sort, done in chunks of rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from vrp.stats._base import NAN, Prepared, Result, check_level, constant_reason, one_class_reason, prepare

_CHUNK_ELEMS = 1 << 16  # items x resamples per chunk: keeps the working set in cache (measured 2^14..2^20)
_BLOCK = 250  # resamples per independent random stream (the unit of work of a thread)


@dataclass(frozen=True)
class AurocResult(Result):
    """AUROC with its percentile bootstrap CI and two-sided permutation p-value.

    ``n_boot`` is the number of resamples used (plain resampling skips resamples with a single
    class, counted in ``n_boot_skipped``); ``p_value`` is NaN when ``n_perm`` = 0.
    """

    auroc: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_pos: int
    n_boot: int
    undefined: str | None
    n_dropped: int = 0
    n_boot_skipped: int = 0
    n_perm: int = 0
    level: float = 0.95
    stratified: bool = True


class _Kernel:
    """``2U`` of resamples of one signal, from multiplicities of the positives and negatives."""

    def __init__(self, pos: np.ndarray, neg: np.ndarray):
        # pos [P], neg [N] scores. The multiplicity matrices given to ``twice_u`` are in this order.
        order = np.argsort(neg, kind="stable")
        self.order = None if np.array_equal(order, np.arange(neg.size)) else order
        sorted_neg = neg[order]
        self.lo = np.searchsorted(sorted_neg, pos, side="left")  # [P] negatives strictly below
        self.hi = np.searchsorted(sorted_neg, pos, side="right")  # [P] negatives at or below
        tied = np.flatnonzero(self.lo != self.hi)  # positives tied with some negative
        self.tied = tied.size > 0
        # few ties: correct 2 C[lo] for the tied positives only; many: gather C[hi] for all
        self.few = tied if 0 < tied.size <= pos.size // 4 else None

    def observed(self) -> int:
        return int(self.lo.sum() + self.hi.sum())

    def twice_u(self, cp: np.ndarray, cn: np.ndarray) -> np.ndarray:
        """``cp`` [b, P], ``cn`` [b, N] int64 multiplicities -> [b] int64 ``2U`` per resample (exact)."""
        if self.order is not None:
            cn = cn[:, self.order]
        cum = np.zeros((cn.shape[0], cn.shape[1] + 1), np.int64)  # [b, N + 1]
        np.cumsum(cn, axis=1, out=cum[:, 1:])
        g = cum[:, self.lo]  # [b, P]
        if not self.tied:
            return 2 * np.einsum("ij,ij->i", cp, g)
        if self.few is None:
            g += cum[:, self.hi]
            return np.einsum("ij,ij->i", cp, g)
        t = self.few
        extra = cum[:, self.hi[t]] - cum[:, self.lo[t]]  # [b, T] tied negatives
        return 2 * np.einsum("ij,ij->i", cp, g) + np.einsum("ij,ij->i", cp[:, t], extra)


def _counts(rng: np.random.Generator, b: int, m: int) -> np.ndarray:
    """[b, m] int64 multiplicities: each row a Multinomial(m, uniform) draw (m indices, bincount)."""
    idx = rng.integers(0, m, size=(b, m))  # [b, m]
    idx += np.arange(0, b * m, m)[:, None]
    return np.bincount(idx.ravel(), minlength=b * m).reshape(b, m)


def _blocks(total: int, seq: np.random.SeedSequence) -> list[tuple[int, int, np.random.Generator]]:
    """Split ``total`` draws into fixed blocks, each with its own child stream of ``seq``.

    Results depend only on the seed and ``total``, not on ``n_jobs`` or the chunk size used.
    """
    starts = range(0, total, _BLOCK)
    return [
        (a, min(total, a + _BLOCK), np.random.default_rng(c))
        for a, c in zip(starts, seq.spawn(len(starts)), strict=True)
    ]


def run_blocks(
    fn: Callable[[int, int, np.random.Generator], None], total: int, seq: np.random.SeedSequence, n_jobs: int
) -> None:
    """Call ``fn(start, stop, rng)`` for every block, on ``n_jobs`` threads (numpy releases the GIL)."""
    blocks = _blocks(total, seq)
    workers = (os.cpu_count() or 1) if n_jobs == -1 else n_jobs
    if workers < 1:
        raise ValueError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
    if workers == 1 or len(blocks) < 2:
        for blk in blocks:
            fn(*blk)
        return
    with ThreadPoolExecutor(min(workers, len(blocks))) as ex:
        list(ex.map(lambda blk: fn(*blk), blocks))


def bootstrap_twice_u(
    kernels: list[_Kernel],
    n_pos: int,
    n_neg: int,
    n_boot: int,
    seq: np.random.SeedSequence,
    stratified: bool,
    n_jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample items (the same resamples for every kernel) -> (``2U`` [n_boot, k], ``P_b * N_b`` [n_boot]).

    Stratified: positives and negatives are resampled separately (class sizes fixed). Plain:
    all items resampled together; rows with a single class have ``P_b * N_b`` = 0.
    """
    n = n_pos + n_neg
    rows = max(1, _CHUNK_ELEMS // n)
    twice_u = np.empty((n_boot, len(kernels)))  # [n_boot, k]
    pn = np.empty(n_boot)  # [n_boot]

    def block(start: int, stop: int, rng: np.random.Generator) -> None:
        for a in range(start, stop, rows):
            b = min(rows, stop - a)
            if stratified:
                cp, cn = _counts(rng, b, n_pos), _counts(rng, b, n_neg)
                pn[a : a + b] = float(n_pos) * n_neg
            else:
                c = _counts(rng, b, n)
                cp, cn = c[:, :n_pos], c[:, n_pos:]
                pn[a : a + b] = cp.sum(axis=1) * cn.sum(axis=1)
            for j, k in enumerate(kernels):
                twice_u[a : a + b, j] = k.twice_u(cp, cn)

    run_blocks(block, n_boot, seq, n_jobs)
    return twice_u, pn


def percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    if values.size == 0:
        return NAN, NAN
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_pvalue(values: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller fraction of
    resampled values on either side of 0, with the +1 correction (NaN without resamples)."""
    if values.size == 0:
        return NAN
    tail = min(int(np.count_nonzero(values <= 0)), int(np.count_nonzero(values >= 0)))
    return min(1.0, 2 * (1 + tail) / (1 + values.size))


def permutation_pvalue(
    scores: np.ndarray, y: np.ndarray, n_perm: int, seq: np.random.SeedSequence, n_jobs: int = 1
) -> float:
    """Two-sided Monte Carlo permutation p of AUROC = 1/2: ``(1 + #{|A* - 1/2| >= |A - 1/2|}) / (1 + n_perm)``.

    A label permutation is a uniformly random subset of the smaller class's size (the ``k`` lowest
    of i.i.d. uniform keys per row); its rank sum, in doubled midranks, gives ``2U`` exactly.
    """
    n, n_pos = y.size, int(y.sum())
    r2 = np.rint(2 * rankdata(scores)).astype(np.int64)  # [n] doubled midranks (integers)
    k = min(n_pos, n - n_pos)
    # |2U - P N| = |sum_{positives} r2 - P (n + 1)|, and the same with the negatives' sum and N.
    observed = abs(int(r2[y].sum()) - n_pos * (n + 1))
    rows = max(1, _CHUNK_ELEMS // n)
    hits = np.zeros(n_perm, bool)

    def block(start: int, stop: int, rng: np.random.Generator) -> None:
        for a in range(start, stop, rows):
            b = min(rows, stop - a)
            keys = rng.random((b, n))  # [b, n]
            subset = np.argpartition(keys, k - 1, axis=1)[:, :k]  # [b, k]
            sums = r2[subset].sum(axis=1)  # [b]
            hits[a : a + b] = np.abs(sums - k * (n + 1)) >= observed

    run_blocks(block, n_perm, seq, n_jobs)
    return (1 + int(hits.sum())) / (1 + n_perm)


def _undefined(p: Prepared) -> str | None:
    return p.undefined or one_class_reason(p) or constant_reason(p)


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """AUROC (Mann-Whitney, ties 1/2) of ``scores`` for ``labels``; NaN when undefined.

    Items with a non-finite score or a missing label are dropped (as in ``auroc_ci``). Undefined:
    no usable item, one class, or a constant signal (never a fake 0.5).

    Args:
        scores: [n] signal values, higher = more likely positive.
        labels: [n] bool or 0/1 (NaN / None = missing).
    """
    p = prepare([scores], labels)
    if _undefined(p):
        return NAN
    y = p.y
    k = _Kernel(p.scores[0, y], p.scores[0, ~y])
    return k.observed() / (2.0 * p.n_pos * (p.n - p.n_pos))


def auroc_ci(
    scores: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 10_000,
    level: float = 0.95,
    n_perm: int = 10_000,
    seed: int = 0,
    stratified: bool = True,
    n_jobs: int = 1,
) -> AurocResult:
    """AUROC with a percentile bootstrap CI and a two-sided permutation p-value.

    Args:
        scores: [n] signal values, higher = more likely positive; non-finite items are dropped.
        labels: [n] bool or 0/1 (NaN / None = missing, dropped).
        n_boot: bootstrap resamples (0: no CI).
        level: two-sided confidence level.
        n_perm: label permutations for the p-value (0: no p-value, NaN).
        seed: seeds independent streams for the bootstrap and the permutations.
        stratified: resample positives and negatives separately (default; class sizes stay fixed,
            as pROC does for AUROC CIs, so no resample is lost). ``False``: plain case resampling;
            resamples with a single class are skipped and counted in ``n_boot_skipped``.
        n_jobs: threads (-1: all cores). The result does not depend on it.

    Returns:
        ``AurocResult``; ``undefined`` is set (numbers NaN) for no usable item, one class, or a
        constant signal.
    """
    check_level(level)
    if n_boot < 0 or n_perm < 0:
        raise ValueError(f"n_boot and n_perm must be >= 0, got {n_boot}, {n_perm}")
    p = prepare([scores], labels)
    reason = _undefined(p)
    common = dict(n=p.n, n_pos=p.n_pos, n_dropped=p.n_dropped, level=level, stratified=stratified, n_perm=n_perm)
    if reason:
        return AurocResult(NAN, NAN, NAN, NAN, n_boot=0, undefined=reason, **common)
    s, y = p.scores[0], p.y
    n_pos, n_neg = p.n_pos, p.n - p.n_pos
    kernel = _Kernel(s[y], s[~y])
    auc = kernel.observed() / (2.0 * n_pos * n_neg)
    boot_seq, perm_seq = np.random.SeedSequence(seed).spawn(2)
    twice_u, pn = bootstrap_twice_u([kernel], n_pos, n_neg, n_boot, boot_seq, stratified, n_jobs)
    ok = pn > 0
    boots = twice_u[ok, 0] / (2.0 * pn[ok])  # [n_boot used]
    lo, hi = percentile_ci(boots, level)
    pval = permutation_pvalue(s, y, n_perm, perm_seq, n_jobs) if n_perm else NAN
    used = int(ok.sum())
    return AurocResult(auc, lo, hi, pval, n_boot=used, undefined=None, n_boot_skipped=n_boot - used, **common)
