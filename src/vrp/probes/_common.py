"""What every probe estimator shares."""

from __future__ import annotations

import numpy as np


def proba_columns(p1: np.ndarray) -> np.ndarray:
    """``[n, 2]`` columns P(y=0), P(y=1) (``classes_ = [0, 1]``) from P(y=1) ``[n]``, as
    scikit-learn's binary classifiers return them."""
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1.0 - p1, p1], axis=1)
