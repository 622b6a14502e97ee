"""Multiple-comparison adjustment of p-values (Bonferroni, Benjamini-Hochberg)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_METHODS = {"bonferroni": "bonferroni", "bh": "bh", "fdr_bh": "bh"}


def adjust_pvalues(p: ArrayLike, method: str = "bh") -> np.ndarray:
    """Adjusted p-values across the tests in ``p``; NaN entries stay NaN and do not count in m.

    ``bonferroni``: ``min(1, m p)`` (family-wise error). ``bh`` (alias ``fdr_bh``):
    Benjamini-Hochberg step-up, ``min_{j >= i} min(1, m p_(j) / j)`` over the sorted p-values
    (false discovery rate). Both equal ``statsmodels.stats.multitest.multipletests``'s
    ``pvals_corrected`` on the non-NaN entries.

    Args:
        p: p-values of any shape (an undefined test's p is NaN).
        method: "bonferroni" or "bh".

    Returns:
        Array of the same shape as ``p``; reject at level alpha where adjusted <= alpha.

    Raises:
        ValueError: unknown method, or a p-value outside [0, 1].
    """
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {sorted(_METHODS)}")
    arr = np.asarray(p, dtype=float)
    flat = arr.ravel()
    ok = ~np.isnan(flat)
    vals = flat[ok]  # [m]
    if np.any((vals < 0) | (vals > 1)):
        raise ValueError(f"p-values must lie in [0, 1] (or be NaN), got {vals[(vals < 0) | (vals > 1)][0]!r}")
    m = vals.size
    out = np.full(flat.shape, np.nan)
    if m:
        if _METHODS[method] == "bonferroni":
            adj = np.minimum(1.0, vals * m)
        else:
            order = np.argsort(vals, kind="stable")
            stepped = vals[order] * m / np.arange(1, m + 1)  # [m]
            stepped = np.minimum.accumulate(stepped[::-1])[::-1]
            adj = np.empty(m)
            adj[order] = np.minimum(1.0, stepped)
        out[ok] = adj
    return out.reshape(arr.shape)
