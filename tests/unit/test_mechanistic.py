"""Truth margins and the MLP/attention split against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from vrp.signals import mechanistic as mech


def test_truth_margin_is_best_reference_minus_best_other():
    ref = np.array([[1.0, 3.0], [5.0, 0.0], [-2.0, -1.0]])  # [layers, refs]
    rival = np.array([2.0, 4.0, 0.5])
    np.testing.assert_allclose(mech.truth_margin(ref, rival), [1.0, 1.0, -1.5])
    with pytest.raises(ValueError):
        mech.truth_margin(np.zeros((3, 0)), rival)


def test_positive_from_and_peak():
    assert mech.positive_from([-1, 2, -0.5, 0.1, 3]) == 3
    assert mech.positive_from([1, 2, 3]) == 0
    assert mech.positive_from([1, 2, 0.0]) == 3  # not positive at the end: never (one past the last)
    assert mech.positive_from([1, -2, -3]) == 3
    assert mech.peak_layer([0.0, 4.0, 4.0, 1.0]) == 1


def test_sublayer_contributions_are_projections():
    rng = np.random.default_rng(0)
    attn, mlp, d = rng.normal(size=(4, 8)), rng.normal(size=(4, 8)), rng.normal(size=8)
    ca, cm = mech.sublayer_contributions(attn, mlp, d)
    np.testing.assert_allclose(ca, [attn[i] @ d for i in range(4)])
    np.testing.assert_allclose(cm, [mlp[i] @ d for i in range(4)])


def test_mlp_share():
    np.testing.assert_allclose(mech.mlp_share([1.0, -3.0, 0.0], [3.0, 1.0, 0.0]), [0.75, 0.25, np.nan])
    # positive growth only: attention 1 + 0, MLP 3 + 0 (the negative MLP write counts as no growth)
    assert mech.mlp_share_of_growth([1.0, -2.0], [3.0, -1.0]) == pytest.approx(0.75)
    assert np.isnan(mech.mlp_share_of_growth([-1.0], [-1.0]))
