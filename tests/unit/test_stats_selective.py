"""Risk-coverage / AURC and calibration (vrp.stats.selective) against hand values and scikit-learn."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from vrp.stats.selective import aurc, calibration, risk_coverage

# --------------------------------------------------------------------------- risk-coverage


def test_risk_coverage_hand_case():
    conf = [0.6, 0.9, 0.7, 0.8]  # order by confidence: 0.9 (ok), 0.8 (wrong), 0.7 (ok), 0.6 (ok)
    correct = [1, 1, 1, 0]
    r = risk_coverage(conf, correct)
    np.testing.assert_allclose(r.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(r.risk, [0, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(r.threshold, [0.9, 0.8, 0.7, 0.6])
    assert r.aurc == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert r.optimal_aurc == pytest.approx((0 + 0 + 0 + 1 / 4) / 4)  # the error last
    assert r.e_aurc == pytest.approx(r.aurc - r.optimal_aurc) and r.error_rate == 0.25
    assert aurc(conf, correct) == r.aurc


def test_risk_coverage_matches_definition_without_ties():
    rng = np.random.default_rng(3)
    n = 200
    conf = rng.random(n)
    correct = rng.random(n) < conf  # informative
    r = risk_coverage(conf, correct)
    err = ~correct[np.argsort(-conf)]
    want = np.cumsum(err) / np.arange(1, n + 1)
    np.testing.assert_allclose(r.risk, want)
    assert r.aurc == pytest.approx(want.mean())
    assert r.optimal_aurc <= r.aurc
    # perfect ordering reaches the optimum; reversed is worse than random
    perfect = risk_coverage(correct.astype(float) + 0.01 * conf, correct)
    assert perfect.e_aurc == pytest.approx(0.0, abs=1e-15)
    assert risk_coverage(-conf, correct).aurc > r.aurc


def test_risk_coverage_ties_are_the_average_over_tie_orders():
    conf = np.array([0.9, 0.9, 0.9, 0.5, 0.5, 0.2])
    correct = np.array([1, 0, 1, 0, 1, 1], bool)
    r = risk_coverage(conf, correct)
    blocks = [np.flatnonzero(conf == c) for c in (0.9, 0.5, 0.2)]
    curves = []
    for perms in itertools.product(*(itertools.permutations(b) for b in blocks)):
        order = np.concatenate(perms)
        curves.append(np.cumsum(~correct[order]) / np.arange(1, 7))
    np.testing.assert_allclose(r.risk, np.mean(curves, axis=0))
    # and the result does not depend on the input order
    perm = np.array([5, 3, 1, 0, 4, 2])
    np.testing.assert_allclose(risk_coverage(conf[perm], correct[perm]).risk, r.risk)


def test_optimal_aurc_tends_to_closed_form():
    n, err_rate = 20_000, 0.3
    correct = np.arange(n) >= err_rate * n
    r = risk_coverage(np.random.default_rng(0).random(n), correct)
    assert r.optimal_aurc == pytest.approx(err_rate + (1 - err_rate) * math.log(1 - err_rate), abs=1e-3)
    assert r.aurc == pytest.approx(err_rate, abs=0.01)  # an uninformative signal: risk ~ error rate everywhere


@pytest.mark.parametrize(
    ("conf", "correct", "fragment"),
    [
        (np.arange(5.0), np.ones(5), "only one class among 5 items (all correct)"),
        (np.full(5, 0.7), np.array([1, 0, 1, 0, 1]), "constant"),
        (np.full(5, np.nan), np.array([1, 0, 1, 0, 1]), "no finite values"),
        (np.array([]), np.array([]), "no items"),
    ],
)
def test_risk_coverage_degenerate(conf, correct, fragment):
    r = risk_coverage(conf, correct)
    assert r.undefined and fragment in r.undefined
    assert math.isnan(r.aurc) and math.isnan(r.e_aurc) and r.risk.size == 0 and r.coverage.size == 0
    assert math.isnan(aurc(conf, correct))


def test_risk_coverage_to_dict_and_frozen_arrays():
    r = risk_coverage([0.2, 0.4, 0.9], [0, 1, 1])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["risk"] == [0.0, 0.0, 1 / 3] and d["undefined"] is None
    with pytest.raises(ValueError):
        r.risk[0] = 1.0


# --------------------------------------------------------------------------- calibration


def test_ece_hand_case():
    prob = [0.1, 0.2, 0.9, 0.95]
    correct = [0, 1, 1, 1]
    c = calibration(prob, correct, n_bins=2)
    np.testing.assert_allclose(c.bin_lower, [0, 0.5])
    np.testing.assert_array_equal(c.count, [2, 2])
    np.testing.assert_allclose(c.mean_confidence, [0.15, 0.925])
    np.testing.assert_allclose(c.accuracy, [0.5, 1.0])
    assert c.ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.075)
    assert c.mce == pytest.approx(0.35)


def test_perfectly_calibrated_constant_predictor_has_zero_ece():
    correct = np.r_[np.ones(7), np.zeros(3)]
    c = calibration(np.full(10, 0.7), correct)
    assert c.undefined is None and c.ece == pytest.approx(0.0) and c.count.sum() == 10
    assert np.isnan(c.accuracy[c.count == 0]).all()


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 15])
def test_calibration_bins_match_sklearn(strategy, n_bins):
    rng = np.random.default_rng(n_bins)
    n = 500
    prob = rng.beta(2, 1.5, n)
    prob[:10] = np.round(prob[:10], 1)  # values on bin edges
    correct = rng.random(n) < prob**1.5  # over-confident
    c = calibration(prob, correct, n_bins=n_bins, strategy=strategy)
    acc, conf = calibration_curve(correct, prob, n_bins=n_bins, strategy=strategy)
    filled = c.count > 0
    np.testing.assert_allclose(c.accuracy[filled], acc, rtol=1e-12)
    np.testing.assert_allclose(c.mean_confidence[filled], conf, rtol=1e-12)
    assert c.count.sum() == n
    ece = np.sum(c.count[filled] / n * np.abs(acc - conf))
    assert c.ece == pytest.approx(ece) and c.ece > 0.02


@pytest.mark.parametrize(
    ("prob", "fragment"),
    [
        (np.array([0.2, 1.3, 0.5]), "outside [0, 1]"),
        (np.array([-0.1, 0.3, 0.5]), "outside [0, 1]"),
        (np.full(3, np.nan), "no finite values"),
        (np.array([]), "no items"),
    ],
)
def test_calibration_degenerate(prob, fragment):
    correct = np.ones(prob.size)
    c = calibration(prob, correct, n_bins=4)
    assert c.undefined and fragment in c.undefined
    assert math.isnan(c.ece) and math.isnan(c.mce) and c.count.shape == (4,) and (c.count == 0).all()
    assert np.isnan(c.accuracy).all()


def test_calibration_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        calibration([0.5], [1], strategy="kmeans")
    with pytest.raises(ValueError, match="n_bins"):
        calibration([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="labels has"):
        calibration([0.5, 0.2], [1])
