"""Abstention thresholds from validation predictions (pure functions).

Answer when ``p_correct >= threshold``, abstain below. On validation, items are ranked by
p_correct (ties form one block, never cut, as in :func:`vrp.stats.selective.risk_coverage`);
the candidate thresholds are the block boundaries.

* ``target_risk=r``: the lowest threshold (the highest coverage) whose validation risk (error
  rate among the kept items, the plug-in estimate) is at most ``r``.
* ``target_coverage=c``: the highest threshold that keeps at least ``c`` of validation.

The test split never chooses anything; its coverage and risk at the chosen threshold are
reported next to the validation ones.
"""

from __future__ import annotations

import math

import numpy as np

from vrp.monitor.files import MonitorError

COVERAGE_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def operating_point(p: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """Coverage, risk (with its 95% Wilson interval) and counts when answering ``p >= threshold``."""
    from vrp.stats.intervals import wilson_ci

    kept = p >= threshold
    k = int(kept.sum())
    errors = int((~y[kept].astype(bool)).sum())
    lo, hi = wilson_ci(errors, k)
    coverage = k / p.size if p.size else math.nan
    return {
        "n": int(p.size),
        "kept": k,
        "coverage": coverage,
        "risk": errors / k if k else math.nan,
        "risk_ci95": [lo, hi],
    }


def choose_threshold(
    p: np.ndarray, y: np.ndarray, target_risk: float | None = None, target_coverage: float | None = None
) -> float:
    """The abstention threshold for a target risk or coverage on (validation) predictions.

    Args:
        p: [n] p_correct; y: [n] 0/1 correctness.
        target_risk: highest coverage whose risk is <= this (exclusive with ``target_coverage``).
        target_coverage: keep at least this fraction.

    Returns:
        The threshold (answer when ``p >= threshold``).

    Raises:
        MonitorError: no threshold reaches the target risk, or the curve is undefined.
    """
    from vrp.stats.selective import risk_coverage

    if (target_risk is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_risk and target_coverage")
    rc = risk_coverage(p, y)
    if rc.undefined:
        raise MonitorError(f"cannot choose a threshold on the validation predictions: {rc.undefined}")
    conf = rc.threshold  # [n] descending
    ends = np.flatnonzero(np.r_[conf[:-1] > conf[1:], True])  # last index of each tie block
    if target_risk is not None:
        if not 0 <= target_risk <= 1:
            raise ValueError(f"target_risk must be in [0, 1], got {target_risk}")
        ok = ends[rc.risk[ends] <= target_risk + 1e-12]
        if not ok.size:
            best = int(ends[np.argmin(rc.risk[ends])])
            raise MonitorError(
                f"no threshold reaches validation risk <= {target_risk}: the lowest is {rc.risk[best]:.3f} "
                f"at coverage {rc.coverage[best]:.3f}; choose a larger --target-risk or use --target-coverage"
            )
        return float(conf[ok.max()])
    if not 0 < target_coverage <= 1:
        raise ValueError(f"target_coverage must be in (0, 1], got {target_coverage}")
    need = math.ceil(target_coverage * conf.size - 1e-9)  # items to keep
    return float(conf[ends[ends >= need - 1].min()])


def thresholds(splits: dict, target_risk: float | None, target_coverage: float | None) -> tuple[dict, list[dict]]:
    """The chosen threshold with its validation and test operating points, and the coverage grid's."""
    (p_val, y_val), (p_test, y_test) = splits["val"], splits["test"]

    def described(t: float) -> dict:
        return {"val": operating_point(p_val, y_val, t), "test": operating_point(p_test, y_test, t)}

    t = choose_threshold(p_val, y_val, target_risk, target_coverage)
    chosen = {
        "value": t,
        "rule": "target_risk" if target_risk is not None else "target_coverage",
        "target": target_risk if target_risk is not None else target_coverage,
        "chosen_on": "val",
        "meaning": "answer when p_correct >= value, abstain below",
        **described(t),
    }
    grid = []
    for c in COVERAGE_GRID:
        tc = choose_threshold(p_val, y_val, target_coverage=c)
        grid.append({"target_coverage": c, "threshold": tc, **described(tc)})
    return chosen, grid
