"""The consistency head (vrp.probes.consistency), the correlation statistics it is reported with
(vrp.stats.correlation) and its part of the monitor directory (no model).

Oracles: scikit-learn's LogisticRegression fitted on every row twice (label 1 with weight s, label
0 with weight 1 - s: the fractional-logit objective exactly), a brute-force loop for the choice on
validation, and scipy's pearsonr / spearmanr.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score

from vrp.monitor import Monitor, MonitorError, read_monitor
from vrp.monitor.files import CONSISTENCY_ARRAYS, META, WEIGHTS, sha256_bytes, write_monitor
from vrp.monitor.live import Answer
from vrp.probes.consistency import ConsistencyHead, check_target, sweep_consistency
from vrp.probes.io import load_probe, save_probe
from vrp.stats.correlation import FIELLER_VAR, pearson, spearman

PLANTED_LAYER, K = 2, 10


def planted(n=400, L=4, d=24, seed=0):
    """X [n, L, d] with correlated units; S_SC = (Binomial(K, expit(score)) / K), the score on layer 2 only."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, L, d))
    for layer in range(L):
        X[:, layer] = rng.standard_normal((n, 3)) @ rng.standard_normal((3, d)) * 0.7 + rng.standard_normal((n, d))
    X = X * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)  # units of different scales and offsets
    score = X[:, PLANTED_LAYER, [1, 5, 9]] @ np.array([0.8, -0.8, 0.6]) + 1.0
    s = rng.binomial(K, expit(score)) / K
    return X.astype(np.float32), s


def sklearn_oracle(Z: np.ndarray, s: np.ndarray, C: float) -> LogisticRegression:
    """The fractional logit as weighted logistic regression: every row twice, labels 1 / 0, weights s / 1 - s."""
    n = len(s)
    lr = LogisticRegression(C=C, tol=1e-10, max_iter=20_000)
    return lr.fit(np.vstack([Z, Z]), np.r_[np.ones(n), np.zeros(n)], sample_weight=np.r_[s, 1 - s])


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_fit_is_sklearns_weighted_logistic_regression(C):
    X, s = planted()
    head = ConsistencyHead(C=C, tol=1e-7, max_iter=2000).fit(X, s)
    assert head.coef_.shape == (4, 24) and head.intercept_.shape == (4,) and head.converged_.all()
    for layer in range(4):
        x = X[:, layer].astype(np.float64)
        Z = (x - head.mean_[layer]) / head.scale_[layer]  # the head's standardization (population std)
        np.testing.assert_allclose(head.mean_[layer], x.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(head.scale_[layer], x.std(0), rtol=1e-4)
        lr = sklearn_oracle(Z, s, C)
        np.testing.assert_allclose(head.coef_[layer], lr.coef_[0], rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(head.predict_layers(X)[:, layer], lr.predict_proba(Z)[:, 1], atol=1e-4)


def test_predict_is_the_chosen_layer_and_stays_in_the_unit_interval():
    X, s = planted()
    head = ConsistencyHead(C=0.1, layer=PLANTED_LAYER).fit(X, s)
    p = head.predict(X)
    np.testing.assert_array_equal(p, head.predict_layers(X)[:, PLANTED_LAYER])
    np.testing.assert_array_equal(p, expit(head.decision_function_layers(X)[:, PLANTED_LAYER]))
    assert p.dtype == np.float64 and ((p > 0) & (p < 1)).all()
    assert head.score(X, s) == pytest.approx(r2_score(s, p))  # RegressorMixin: R^2 of predict
    one = ConsistencyHead(C=0.1).fit(X[:, PLANTED_LAYER], s)  # [n, d]: one layer
    np.testing.assert_allclose(one.predict(X[:, PLANTED_LAYER]), p, atol=1e-6)


def test_sweep_chooses_C_per_layer_then_the_layer_on_validation_mse():
    X, s = planted(n=500)
    tr, va = np.arange(300), np.arange(300, 500)
    Cs = (0.001, 0.01, 0.1, 1.0)
    res = sweep_consistency(X[tr], s[tr], X[va], s[va], Cs=Cs, tol=1e-6, max_iter=1000)
    brute = np.empty((4, len(Cs)))
    for j, C in enumerate(Cs):  # one fit per C, every layer: the same grid by brute force
        pred = ConsistencyHead(C=C, tol=1e-6, max_iter=1000).fit(X[tr], s[tr]).predict_layers(X[va])
        brute[:, j] = ((pred - s[va, None]) ** 2).mean(0)
    np.testing.assert_allclose(res.val_mse, brute, rtol=1e-3)
    np.testing.assert_array_equal(res.best_C, np.asarray(Cs)[brute.argmin(1)])
    assert res.best_layer == int(brute.min(1).argmin()) == PLANTED_LAYER == res.model.layer
    np.testing.assert_allclose(res.best_val_mse, brute.min(1), rtol=1e-3)
    # the chosen layer reproduces S_SC well beyond the mean: R^2 on validation > 0.3
    mse = res.best_val_mse[PLANTED_LAYER]
    assert 1 - mse / s[va].var() > 0.3
    assert 1 - res.best_val_mse[0] / s[va].var() < 0.05  # a layer without the signal: about the mean


def test_save_load_round_trip(tmp_path):
    X, s = planted(n=200)
    head = sweep_consistency(X[:120], s[:120], X[120:], s[120:], Cs=(0.01, 0.1)).model
    save_probe(head, tmp_path / "head")
    back = load_probe(tmp_path / "head")
    assert isinstance(back, ConsistencyHead) and back.layer == head.layer
    np.testing.assert_array_equal(back.predict(X), head.predict(X))
    np.testing.assert_array_equal(back.C, head.C)
    doc = json.loads((tmp_path / "head" / "probe.json").read_text())
    assert doc["class"] == "ConsistencyHead" and doc["module"] == "vrp.probes.consistency"


def test_scikit_learn_conventions():
    head = ConsistencyHead(C=0.5, layer=1)
    assert clone(head).get_params() == head.get_params()
    with pytest.raises(NotFittedError):
        head.predict(np.zeros((2, 3, 4), np.float32))
    X, s = planted(n=60)
    assert head.fit(X, s) is head and not hasattr(ConsistencyHead(), "coef_")
    with pytest.raises(ValueError, match="layer=7"):
        ConsistencyHead(layer=7).fit(X, s)


@pytest.mark.parametrize(
    ("s", "match"),
    [
        ([0.5, 1.5, 1.0], "in \\[0, 1\\]"),
        ([0.5, np.nan, 1.0], "finite"),
        ([1.0, 1.0, 1.0], "same for every item"),
        ([0.5, 1.0], "\\[3\\]"),
    ],
)
def test_bad_targets_are_clear_errors(s, match):
    with pytest.raises(ValueError, match=match):
        check_target(s, 3)
    if len(s) == 3:
        with pytest.raises(ValueError, match=match):
            ConsistencyHead().fit(np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32), s)


# ---- correlation --------------------------------------------------------------------------


def test_pearson_equals_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=50)
    y = 0.4 * x + rng.normal(size=50)
    r = pearson(x, y, level=0.9)
    ref = stats.pearsonr(x, y)
    ci = ref.confidence_interval(0.9)
    assert r.undefined is None and r.n == 50
    assert r.r == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_spearman_equals_scipy_with_fiellers_interval():
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=40), 1)  # ties, averaged as scipy does
    y = np.round(x + rng.normal(size=40), 0) / 10  # a coarse fraction, like S_SC
    r = spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert r.r == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    half = stats.norm.ppf(0.975) * math.sqrt(FIELLER_VAR / (40 - 3))
    assert (r.ci_low, r.ci_high) == pytest.approx((math.tanh(math.atanh(r.r) - half),
                                                   math.tanh(math.atanh(r.r) + half)))  # fmt: skip


def test_correlation_drops_non_finite_and_says_when_undefined():
    x, y = np.arange(8.0), np.array([1.0, 3, 2, 5, 4, 7, 6, 8])
    x2, y2 = np.r_[x, np.nan, 3.0], np.r_[y, 1.0, np.inf]
    r = pearson(x2, y2)
    assert r.n == 8 and r.n_dropped == 2 and r.r == pytest.approx(stats.pearsonr(x, y).statistic)
    const = spearman(x, np.ones(8))
    assert math.isnan(const.r) and "constant" in const.undefined
    few = pearson(x[:3], y[:3])
    assert math.isnan(few.r) and "too few" in few.undefined
    with pytest.raises(ValueError, match="same length"):
        pearson(x, y[:5])


# ---- the monitor directory ----------------------------------------------------------------

D = 8


def _doc(head: bool = True, layer: int = 3) -> dict:
    doc = {
        "model": {"model_type": "llava", "sha256": "0" * 64, "d_model": D, "n_layers": 4, "dtype": "float32",
                  "name": "toy-llava"},
        "generation": {"max_new_tokens": 4, "batch_size": 16},
        "probe": {"residual_layer": 2, "input_dtype": "float16"},
        "threshold": {"value": 0.5},
    }  # fmt: skip
    if head:
        doc["consistency_head"] = {"residual_layer": layer, "input_dtype": "float16", "C": 0.1}
    return doc


def _arrays(head: bool = True) -> dict:
    rng = np.random.default_rng(0)
    a = {"coef": rng.normal(size=D), "mean": rng.normal(size=D) * 3, "scale": rng.uniform(20, 60, size=D),
         "intercept": np.array([0.3])}  # fmt: skip
    if head:
        a.update({"consistency.coef": rng.normal(size=D), "consistency.mean": rng.normal(size=D) * 3,
                  "consistency.scale": rng.uniform(20, 60, size=D), "consistency.intercept": np.array([1.2])})  # fmt: skip
    return a


def test_monitor_with_a_head_round_trips_and_applies_the_head_on_float16_residuals(tmp_path):
    d = write_monitor(tmp_path / "m", _arrays(), _doc())
    arrays, doc = read_monitor(d)
    assert set(CONSISTENCY_ARRAYS) <= set(arrays) and doc["consistency_head"]["residual_layer"] == 3
    m = Monitor.load(d)
    assert m.head_layer == 3 and m.residual_layer == 2 and "consistency head at residual layer 3" in repr(m)
    h = np.random.default_rng(1).normal(size=(6, D)) * 40
    x = h.astype(np.float16).astype(np.float32)
    a = _arrays()
    want = expit(((x - a["consistency.mean"]) / a["consistency.scale"]) @ a["consistency.coef"] + 1.2)
    got = m.predicted_consistency(h)
    assert got.min() > 0.02 and got.max() < 0.98  # not saturated
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got, m.consistency_head.predict(x), rtol=1e-6)  # the head's own predict
    np.testing.assert_array_equal(got, np.concatenate([m.predicted_consistency(r[None]) for r in h]))
    np.testing.assert_allclose(m.p_correct(h), Monitor.load(write_monitor(tmp_path / "old", _arrays(False),
                                                                          _doc(False))).p_correct(h))  # fmt: skip


def test_a_monitor_without_a_head_still_loads(tmp_path):
    m = Monitor.load(write_monitor(tmp_path / "old", _arrays(False), _doc(False)))
    assert m.consistency_head is None and m.head_layer is None and "consistency" not in repr(m)
    with pytest.raises(MonitorError, match="no consistency head"):
        m.predicted_consistency(np.zeros((1, D)))
    a = Answer("yes", 0.9, False, 0.5, (3,))  # positional, as before the field existed
    assert a.predicted_consistency is None


def test_a_head_section_without_its_arrays_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"consistency\.coef"):
        write_monitor(tmp_path / "m", _arrays(False), _doc())
    d = write_monitor(tmp_path / "m", _arrays(False), _doc(False))
    doc = json.loads((d / META).read_text())
    doc["consistency_head"] = {"residual_layer": 1, "input_dtype": "float16"}  # the section, not the arrays
    (d / META).write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match="lacks the array"):
        read_monitor(d)
    del doc["consistency_head"]["residual_layer"]
    (d / META).write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match=r"consistency_head\.residual_layer"):
        read_monitor(d)


def test_a_head_of_the_wrong_width_is_refused(tmp_path):
    a = _arrays()
    a["consistency.coef"] = np.zeros(D + 1)
    d = write_monitor(tmp_path / "m", a, _doc())
    with pytest.raises(MonitorError, match=r"consistency\.coef has shape"):
        read_monitor(d)
    blob = (d / WEIGHTS).read_bytes()
    assert json.loads((d / META).read_text())["files"][WEIGHTS]["sha256"] == sha256_bytes(blob)
