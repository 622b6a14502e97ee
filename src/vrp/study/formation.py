"""Margin formation across families (SPEC §4, the paper's Table 3): when the truth margin of
correct answers separates from that of wrong ones, where the separation peaks, and who writes it.

Definitions (residual index ``l`` = 0 for the embeddings, ``l`` = the output of block ``l``;
``L`` decoder blocks; depth = ``l / L`` so families of different depth compare):

- ``m_c(l)``, ``m_w(l)``: mean truth margin of the correct and of the wrong items; the *gap*
  ``g(l) = m_c(l) - m_w(l)`` with a percentile bootstrap CI (correct and wrong items resampled
  separately, so both class sizes stay fixed).
- *emergence layer*: the first ``l`` from which the gap CI lies above 0 at every later layer
  (None when the last layer's does not): separation that appears and stays, as the per-item
  ``margin_positive_from`` asks of the margin itself. SPEC §4 words it as "the first layer whose
  gap CI excludes 0"; on the toys the embedding layer's gap (the lens of the question's last
  token, which differs between task types, not between right and wrong answers) already does,
  so the literal reading calls every family "no silent phase". The *silent phase* is the layers
  before the emergence layer (``emergence`` layers: 0 .. emergence - 1; ``L + 1`` if none).
- *peak layer*: ``argmax_l g(l)`` (the first on ties).
- Their CIs come from the same resamples: the peak's is the percentile interval of the
  resampled argmax; the emergence layer's is that of the first layer from which the resampled
  gap stays ``z`` of its own (Welch) standard errors above 0 (``L + 1`` where it does not), a
  normal-approximation stand-in for the nested bootstrap the point definition would need.
- *MLP share at the peak*: per item, ``|c_mlp| / (|c_attn| + |c_mlp|)`` of the block that writes
  the peak residual (block ``peak - 1``; :func:`vrp.signals.mechanistic.mlp_share`), averaged
  over the items where it is defined, with a bootstrap CI; undefined when the peak is the
  embeddings.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from vrp.signals.mechanistic import mlp_share
from vrp.stats.auroc import percentile_ci
from vrp.stats.effects import mean_ci

NAN = float("nan")


def emergence_layer(above: np.ndarray) -> np.ndarray:
    """First index of the trailing run of True along the last axis (``len`` when the last is False).

    ``above``: ``[..., L + 1]`` bool, "the gap is above 0 here"; e.g. ``[T, F, T, T]`` -> 2.
    """
    a = np.asarray(above, dtype=bool)
    size = a.shape[-1]
    if size == 0:
        return np.zeros(a.shape[:-1], dtype=np.int64)
    below = ~a
    last_below = np.where(below.any(-1), size - 1 - np.argmax(below[..., ::-1], axis=-1), -1)
    return last_below + 1


def _moments(counts: np.ndarray, x: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resampled means and variances (ddof 1) of the columns of ``x`` from multiplicities [b, n]."""
    n = counts.sum(axis=1, keepdims=True).astype(np.float64)  # [b, 1]
    s, s2 = counts @ x, counts @ x2  # [b, K]
    mean = s / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(s2 - n * mean**2, 0.0) / (n - 1)
    return mean, var


def margin_formation(
    margin: np.ndarray,
    correct: np.ndarray,
    attn_contrib: np.ndarray | None = None,
    mlp_contrib: np.ndarray | None = None,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """The formation statistics of one run (module docstring).

    Args:
        margin: ``[n, L + 1]`` truth margin per item and residual index.
        correct: ``[n]`` bool labels.
        attn_contrib, mlp_contrib: ``[n, L]`` sub-block contributions to the margin (optional).
        n_boot: bootstrap resamples.
        level: two-sided confidence level.
        seed: seeds the resamples.

    Returns:
        dict with ``L``, ``n_correct``, ``n_wrong``, the curves (``mean_correct``, ``mean_wrong``,
        ``gap``, ``gap_ci_low``, ``gap_ci_high``: lists over ``l``), ``emergence`` (+ ``_ci_low``,
        ``_ci_high``), ``silent`` (layers in the silent phase), ``peak`` (+ CI), ``peak_gap``
        (+ CI), the depths ``emergence_depth`` / ``peak_depth`` (``l / L``), ``mlp_share_at_peak``
        (+ CI, ``n_share``) and ``undefined`` (a reason, or "").
    """
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(correct).astype(bool)
    if m.ndim != 2 or y.shape != (m.shape[0],):
        raise ValueError(f"margin must be [n, L + 1] and correct [n], got {m.shape} and {y.shape}")
    L = m.shape[1] - 1
    keep = np.isfinite(m).all(axis=1)
    m, y = m[keep], y[keep]
    mc, mw = m[y], m[~y]
    out: dict = {"L": L, "n_correct": int(y.sum()), "n_wrong": int((~y).sum()), "undefined": ""}
    blank = dict.fromkeys(
        ("emergence", "emergence_ci_low", "emergence_ci_high", "silent", "peak", "peak_ci_low", "peak_ci_high",
         "emergence_depth", "peak_depth", "peak_gap", "peak_gap_ci_low", "peak_gap_ci_high"), None)  # fmt: skip
    out.update(blank, mlp_share_at_peak=NAN, mlp_share_ci_low=NAN, mlp_share_ci_high=NAN, n_share=0)
    nan_curve = [NAN] * (L + 1)
    out.update(mean_correct=mc.mean(0).tolist() if len(mc) else nan_curve,
               mean_wrong=mw.mean(0).tolist() if len(mw) else nan_curve)  # fmt: skip
    if len(mc) < 2 or len(mw) < 2:
        out["undefined"] = f"needs at least 2 correct and 2 wrong items (have {len(mc)} and {len(mw)})"
        out.update(gap=nan_curve, gap_ci_low=nan_curve, gap_ci_high=nan_curve)
        return out
    gap = mc.mean(0) - mw.mean(0)
    rng = np.random.default_rng(seed)
    z = float(norm.ppf((1 + level) / 2))
    gaps, first = [], []
    block = max(1, 2_000_000 // len(m))
    for start in range(0, n_boot, block):  # each block: b resamples of the correct and of the wrong items
        b = min(block, n_boot - start)
        c_c = rng.multinomial(len(mc), np.full(len(mc), 1.0 / len(mc)), size=b).astype(np.float64)
        c_w = rng.multinomial(len(mw), np.full(len(mw), 1.0 / len(mw)), size=b).astype(np.float64)
        mean_c, var_c = _moments(c_c, mc, mc**2)
        mean_w, var_w = _moments(c_w, mw, mw**2)
        g = mean_c - mean_w  # [b, L + 1]
        se = np.sqrt(var_c / len(mc) + var_w / len(mw))
        first.append(emergence_layer(g > z * se))
        gaps.append(g)
    if not gaps:  # n_boot = 0: point estimates only
        out.update(gap=gap.tolist(), gap_ci_low=nan_curve, gap_ci_high=nan_curve, peak=int(np.argmax(gap)),
                   undefined="no bootstrap resamples (n_boot = 0): no CI, so no emergence layer")  # fmt: skip
        return out
    boots = np.concatenate(gaps)  # [B, L + 1]
    lo = np.array([percentile_ci(boots[:, k], level)[0] for k in range(L + 1)])
    hi = np.array([percentile_ci(boots[:, k], level)[1] for k in range(L + 1)])
    e = int(emergence_layer(lo > 0))
    emergence = e if e <= L else None
    peak = int(np.argmax(gap))
    peaks = boots.argmax(1)
    e_lo, e_hi = percentile_ci(np.concatenate(first).astype(np.float64), level)
    p_lo, p_hi = percentile_ci(peaks.astype(np.float64), level)
    out.update(
        gap=gap.tolist(), gap_ci_low=lo.tolist(), gap_ci_high=hi.tolist(),
        emergence=emergence, emergence_ci_low=e_lo, emergence_ci_high=e_hi,
        silent=emergence if emergence is not None else L + 1,
        emergence_depth=None if emergence is None else emergence / L if L else None,
        peak=peak, peak_ci_low=p_lo, peak_ci_high=p_hi, peak_depth=peak / L if L else None,
        peak_gap=float(gap[peak]), peak_gap_ci_low=float(lo[peak]), peak_gap_ci_high=float(hi[peak]),
    )  # fmt: skip
    if attn_contrib is not None and mlp_contrib is not None and peak >= 1:
        a = np.asarray(attn_contrib, dtype=np.float64)[keep][:, peak - 1]
        b = np.asarray(mlp_contrib, dtype=np.float64)[keep][:, peak - 1]
        share = mlp_share(a, b)[:, None]  # [n, 1]
        mean, s_lo, s_hi = mean_ci(share, n_boot, level, rng)
        out.update(mlp_share_at_peak=float(mean[0]), mlp_share_ci_low=float(s_lo[0]),
                   mlp_share_ci_high=float(s_hi[0]), n_share=int(np.isfinite(share).sum()))  # fmt: skip
    return out
