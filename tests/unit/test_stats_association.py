"""Point-biserial correlation and multiple-comparison adjustment (vrp.stats) against scipy / statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, pointbiserialr
from statsmodels.stats.multitest import multipletests

from vrp.stats.association import point_biserial
from vrp.stats.multitest import adjust_pvalues

# --------------------------------------------------------------------------- point-biserial


@pytest.mark.parametrize("seed", range(5))
def test_point_biserial_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 300))
    y = rng.random(n) < 0.4
    y[:2] = [True, False]
    s = rng.normal(size=n) + seed * 0.3 * y
    ref = pointbiserialr(y, s)
    r = point_biserial(s, y)
    assert r.undefined is None and r.n == n
    assert r.r == pytest.approx(ref.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    for level in (0.95, 0.8):
        ci = pearsonr(s, y.astype(float)).confidence_interval(confidence_level=level)  # Fisher z
        got = point_biserial(s, y.astype(int), level=level)
        assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert got.ci_low < got.r < got.ci_high


def test_point_biserial_drops_nan_and_handles_perfect_separation():
    s = np.array([0.1, 0.2, np.nan, 0.8, 0.9, 0.7])
    y = np.array([0, 0, 1, 1, 1, 0])
    r = point_biserial(s, y)
    keep = ~np.isnan(s)
    assert r.n == 5 and r.n_dropped == 1
    assert r.r == pytest.approx(pointbiserialr(y[keep], s[keep]).statistic)
    perfect = point_biserial([0, 0, 0, 1, 1], [0, 0, 0, 1, 1])
    assert perfect.r == 1.0 and perfect.ci_low == perfect.ci_high == 1.0 and perfect.p_value == 0.0


@pytest.mark.parametrize(
    ("s", "y", "fragment"),
    [
        (np.arange(10.0), np.ones(10), "only one class among 10 items (all correct)"),
        (np.full(10, 2.0), np.r_[np.ones(5), np.zeros(5)], "constant"),
        (np.full(10, np.nan), np.r_[np.ones(5), np.zeros(5)], "no finite values"),
        (np.array([]), np.array([]), "no items"),
        (np.array([0.1, 0.5, 0.2]), np.array([0, 1, 0]), "too few items"),
    ],
)
def test_point_biserial_degenerate(s, y, fragment):
    r = point_biserial(s, y)
    assert r.undefined and fragment in r.undefined
    assert all(math.isnan(v) for v in (r.r, r.ci_low, r.ci_high, r.p_value))


# --------------------------------------------------------------------------- multiple comparisons


@pytest.mark.parametrize("method", ["bonferroni", "bh"])
@pytest.mark.parametrize("seed", range(4))
def test_adjust_matches_statsmodels_with_nans(method, seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    p = rng.random(m) ** 3  # some small
    p[rng.random(m) < 0.2] = np.nan
    if m > 1:
        p[1] = p[0]  # a tie
    ok = ~np.isnan(p)
    got = adjust_pvalues(p, method)
    assert np.array_equal(np.isnan(got), ~ok)
    if ok.any():
        ref = multipletests(p[ok], method={"bh": "fdr_bh", "bonferroni": "bonferroni"}[method])[1]
        np.testing.assert_allclose(got[ok], ref, rtol=1e-12)


def test_adjust_known_values_and_shape():
    p = np.array([[0.01, 0.04], [0.03, np.nan]])
    bonf = adjust_pvalues(p, "bonferroni")
    np.testing.assert_allclose(bonf, [[0.03, 0.12], [0.09, np.nan]])
    # BH, m = 3: sorted 0.01, 0.03, 0.04 -> 0.03, 0.045, 0.04 -> step-up min from the top: 0.03, 0.04, 0.04
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [[0.03, 0.04], [0.04, np.nan]])
    assert adjust_pvalues(p, "fdr_bh").shape == (2, 2)
    assert adjust_pvalues([], "bh").shape == (0,)
    assert np.isnan(adjust_pvalues([np.nan, np.nan], "bonferroni")).all()


def test_adjust_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        adjust_pvalues([0.1], "holm-ish")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.1, 1.5], "bh")
