"""Non-linear probes: the 2-layer MLP and the attention-feature tree ensemble (SPEC section 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from scipy.special import expit
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from vrp.probes.mlp import MLPProbe
from vrp.probes.trees import TreeEnsembleProbe, interaction_feature_names, interaction_features

TYPES = ("entropy", "fragmentation", "peakiness")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny MLPs gain nothing from threads, and OpenMP spinning on a shared 2-core box costs 10-50x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _roundtrip(probe, tmp_path):
    """Save through safetensors + JSON (what the io module does) and rebuild with from_state."""
    tensors, meta = probe.get_state()
    path = tmp_path / "probe.safetensors"
    save_file(tensors, str(path))
    return type(probe).from_state(load_file(str(path)), json.loads(json.dumps(meta)))


def _xor(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def _small_mlp(**kw) -> MLPProbe:
    return MLPProbe(**{"hidden": 16, "max_epochs": 4, "batch_size": 64, **kw})


# ---------------------------------------------------------------- MLP


def test_mlp_learns_xor_that_a_linear_probe_cannot():
    X, y = _xor(2500, 10, seed=0)
    Xtr, ytr, Xte, yte = X[:1500], y[:1500], X[1500:], y[1500:]
    mlp = MLPProbe(hidden=64, max_epochs=60, seed=0).fit(Xtr, ytr)
    linear = LogisticRegression().fit(Xtr, ytr)
    assert roc_auc_score(yte, mlp.predict_proba(Xte)[:, 1]) > 0.9
    assert roc_auc_score(yte, linear.predict_proba(Xte)[:, 1]) < 0.65
    assert mlp.predict_proba(Xte).shape == (1000, 2)
    np.testing.assert_array_equal(mlp.predict(Xte), (mlp.decision_function(Xte) > 0).astype(int))


def test_mlp_is_deterministic_per_seed_and_leaves_global_rng_alone():
    X, y = _xor(400, 8, seed=1)
    state = torch.get_rng_state()
    a = _small_mlp(seed=3).fit(X, y).predict_proba(X)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)  # a different global state must not matter
    b = _small_mlp(seed=3).fit(X, y).predict_proba(X)
    c = _small_mlp(seed=4).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mlp_early_stops_on_noise_and_restores_best_epoch():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(600, 20)).astype(np.float32), rng.integers(0, 2, 600)
    probe = MLPProbe(hidden=64, max_epochs=200, patience=5, seed=0).fit(X, y)
    assert probe.stopped_early_ and probe.n_epochs_ < 200
    assert probe.n_epochs_ == probe.best_epoch_ + 5
    assert probe.best_val_loss_ == min(probe.val_loss_curve_)
    # explicit validation data is used instead of the internal split
    Xv, yv = rng.normal(size=(200, 20)).astype(np.float32), rng.integers(0, 2, 200)
    probe2 = MLPProbe(hidden=64, max_epochs=200, patience=5, seed=0).fit(X, y, Xv, yv)
    logits = torch.from_numpy(probe2.decision_function(Xv)).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(yv).float())
    assert float(expected) == pytest.approx(probe2.best_val_loss_, abs=1e-5)


def test_mlp_state_roundtrip_is_identical(tmp_path):
    X, y = _xor(500, 12, seed=3)
    probe = _small_mlp(seed=0).fit(X, y)
    tensors, _ = probe.get_state()
    assert all(v.dtype == np.float32 for v in tensors.values())
    assert tensors["fc1.weight"].shape == (16, 12) and tensors["mean"].shape == (12,)
    loaded = _roundtrip(probe, tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    assert loaded.get_params() == probe.get_params() and loaded.n_epochs_ == probe.n_epochs_
    raw = _small_mlp(standardize=False).fit(X, y)
    np.testing.assert_array_equal(_roundtrip(raw, tmp_path).decision_function(X), raw.decision_function(X))


def test_mlp_accepts_float16_and_rejects_bad_input():
    X, y = _xor(300, 6, seed=4)
    probe = _small_mlp().fit(X.astype(np.float16), y)
    X16 = X.astype(np.float16)
    np.testing.assert_array_equal(probe.predict_proba(X16), probe.predict_proba(X16.astype(np.float32)))
    with pytest.raises(NotFittedError):
        MLPProbe().predict_proba(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small_mlp().fit(bad, y)
    with pytest.raises(ValueError, match="binary"):
        _small_mlp().fit(X, y + 1)
    with pytest.raises(ValueError, match="features"):
        probe.predict_proba(X[:, :5])
    assert clone(probe).get_params() == probe.get_params()


def test_mlp_keeps_the_sklearn_classifier_contract():
    X, y = _xor(400, 6, seed=5)
    probe = _small_mlp(seed=1).fit(X[:300], y[:300])
    assert is_classifier(probe)
    proba, logits = probe.predict_proba(X[300:]), probe.decision_function(X[300:])
    assert proba.shape == (100, 2) and logits.shape == (100,)
    np.testing.assert_array_equal(proba[:, 1], expit(logits))
    np.testing.assert_array_equal(proba[:, 0], 1.0 - proba[:, 1])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(probe.predict(X[300:]), probe.classes_[proba.argmax(1)])
    copy = clone(probe)
    assert copy.get_params() == probe.get_params() and not hasattr(copy, "net_")
    # cross_val_score refits a clone per fold: its fold scores are those of the same loop by hand
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    got = cross_val_score(copy, X, y, cv=cv, scoring="roc_auc")
    want = [
        roc_auc_score(y[te], clone(probe).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]) for tr, te in cv.split(X, y)
    ]
    np.testing.assert_array_equal(got, want)
    cal = CalibratedClassifierCV(_small_mlp(seed=1), cv=cv).fit(X[:300], y[:300]).predict_proba(X[300:])
    assert cal.shape == (100, 2)
    np.testing.assert_allclose(cal.sum(1), 1.0, atol=1e-12)


# ---------------------------------------------------------------- tree ensemble


def _attention_features(n: int, n_layers: int, seed: int, layer: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Layer-major [n, L*3] features; label = entropy_L{layer} > 0.3 AND peakiness_L{layer} > -0.2, 5% flipped."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_layers * 3))
    X[:, 1::3] = rng.integers(0, 5, size=(n, n_layers))  # fragmentation is a count
    y = (X[:, 3 * layer + 0] > 0.3) & (X[:, 3 * layer + 2] > -0.2)
    y ^= rng.random(n) < 0.05
    names = [f"{t}_L{l}" for l in range(n_layers) for t in TYPES]
    return X, y.astype(np.int64), names


def test_interaction_features_shape_order_and_values():
    X = np.arange(1, 13, dtype=np.float64).reshape(2, 6)  # 2 rows, L=2 layers x T=3 types
    Z = interaction_features(X, n_types=3)
    assert Z.shape == (2, 6 + 2 * 3 + 3 + 2 * 3 * 3)
    np.testing.assert_array_equal(Z[:, :6], X)
    # within-layer pairs (0,1), (0,2), (1,2) of layer 0 then layer 1; row 0 layer 1 = (4, 5, 6)
    np.testing.assert_array_equal(Z[0, 6:12], [1 * 2, 1 * 3, 2 * 3, 4 * 5, 4 * 6, 5 * 6])
    means = Z[0, 12:15]
    np.testing.assert_array_equal(means, [2.5, 3.5, 4.5])
    # cross block order (l, t, s): x[l=1, t=2] * mean[s=0] sits at 15 + (1*3 + 2)*3 + 0
    assert Z[0, 15 + (1 * 3 + 2) * 3 + 0] == 6 * 2.5
    names = interaction_feature_names([f"{t}_L{l}" for l in range(2) for t in TYPES])
    assert len(names) == Z.shape[1]
    assert names[6 + 3 + 2] == "fragmentation_L1*peakiness_L1"
    assert names[15 + (1 * 3 + 2) * 3] == "peakiness_L1*layer_mean_t0"
    assert interaction_features(np.zeros((4, 96))).shape == (4, 483)  # 32 layers x 3 types
    with pytest.raises(ValueError, match="n_types"):
        interaction_features(np.zeros((2, 7)))


def test_tree_probe_recovers_planted_interaction():
    X, y, names = _attention_features(1800, n_layers=6, seed=0)
    probe = TreeEnsembleProbe(kind="gbt", n_estimators=60, learning_rate=0.1, feature_names=names, seed=0)
    probe.fit(X[:1200], y[:1200])
    assert roc_auc_score(y[1200:], probe.predict_proba(X[1200:])[:, 1]) > 0.9
    assert len(probe.feature_importances_) == len(probe.feature_names_out_) == probe.transform(X[:1]).shape[1]
    top = probe.feature_names_out_[int(np.argmax(probe.feature_importances_))]
    assert "_L3" in top and "fragmentation" not in top


@pytest.mark.parametrize("kind", ["gbt", "rf"])
def test_tree_export_matches_sklearn_and_reload_is_identical(kind, tmp_path):
    X, y, names = _attention_features(900, n_layers=4, seed=1)
    probe = TreeEnsembleProbe(kind=kind, n_estimators=40, feature_names=names, seed=0).fit(X[:600], y[:600])
    oracle = probe.estimator_.predict_proba(probe.transform(X[600:]))
    ours = probe.predict_proba(X[600:])  # [n, 2]
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=1e-12)
    loaded = _roundtrip(probe, tmp_path)
    assert loaded.estimator_ is None
    np.testing.assert_array_equal(loaded.predict_proba(X[600:]), ours)
    np.testing.assert_array_equal(loaded.feature_importances_, probe.feature_importances_)
    assert loaded.feature_names_out_ == probe.feature_names_out_


@pytest.mark.parametrize("kind", ["gbt", "rf"])
def test_tree_export_follows_sklearn_at_thresholds(kind):
    """Inputs placed exactly on split thresholds (x <= t goes left, after sklearn's float32 cast)."""
    X, y, _ = _attention_features(500, n_layers=2, seed=2, layer=1)
    probe = TreeEnsembleProbe(kind=kind, n_estimators=20, interactions=False, seed=0).fit(X, y)
    t = probe.trees_
    internal = np.flatnonzero(t["children_left"] >= 0)
    rng = np.random.default_rng(0)
    probe_rows = X[rng.integers(0, len(X), 400)].copy()
    pick = rng.choice(internal, size=400)
    probe_rows[np.arange(400), t["feature"][pick]] = t["threshold"][pick]
    on = probe_rows[np.arange(400), t["feature"][pick]].astype(np.float32)
    # rows 0-199 on the threshold, 200-299 one float32 step below it, 300-399 one step above
    probe_rows[np.arange(200, 300), t["feature"][pick[200:300]]] = np.nextafter(on[200:300], np.float32(-np.inf))
    probe_rows[np.arange(300, 400), t["feature"][pick[300:]]] = np.nextafter(on[300:], np.float32(np.inf))
    oracle = probe.estimator_.predict_proba(probe_rows)
    np.testing.assert_allclose(probe.predict_proba(probe_rows), oracle, rtol=0, atol=1e-12)


def test_tree_probe_errors():
    X, y, _ = _attention_features(200, n_layers=2, seed=3, layer=1)
    with pytest.raises(NotFittedError):
        TreeEnsembleProbe().predict_proba(X)
    bad = X.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*impute"):
        TreeEnsembleProbe(n_estimators=5).fit(bad, y)
    probe = TreeEnsembleProbe(kind="rf", n_estimators=5).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        probe.predict_proba(bad)
    with pytest.raises(ValueError, match="kind"):
        TreeEnsembleProbe(kind="xgb").fit(X, y)
    with pytest.raises(ValueError, match="single class"):
        TreeEnsembleProbe().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="n_types"):
        TreeEnsembleProbe(n_types=4).fit(X, y)  # 6 columns are not layers of 4 types
    assert clone(probe).get_params() == probe.get_params()


@pytest.mark.parametrize("kind", ["gbt", "rf"])
def test_tree_probe_keeps_the_sklearn_classifier_contract(kind):
    X, y, names = _attention_features(600, n_layers=3, seed=4, layer=1)
    probe = TreeEnsembleProbe(kind=kind, n_estimators=20, feature_names=names, seed=0).fit(X[:400], y[:400])
    assert is_classifier(probe)
    proba = probe.predict_proba(X[400:])
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(probe.predict(X[400:]), (proba[:, 1] > 0.5).astype(np.int64))
    assert probe.predict(X[400:]).shape == (200,)
    if kind == "gbt":  # the raw log-odds, as scikit-learn's GradientBoostingClassifier.decision_function
        raw = probe.decision_function(X[400:])
        assert raw.shape == (200,)
        np.testing.assert_allclose(
            raw, probe.estimator_.decision_function(probe.transform(X[400:])), rtol=0, atol=1e-12
        )
        np.testing.assert_array_equal(proba[:, 1], expit(raw))
    else:  # scikit-learn's random forest has no decision function; neither has this probe
        assert not hasattr(probe, "decision_function")
    copy = clone(probe)
    assert copy.get_params() == probe.get_params() and not hasattr(copy, "trees_")
    # oracle: scikit-learn's own ensemble on the same expanded features, in the same folds
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    ours = cross_val_score(copy, X, y, cv=cv, scoring="roc_auc")
    common = {"n_estimators": 20, "min_samples_leaf": 5, "random_state": 0}
    est = (
        GradientBoostingClassifier(learning_rate=0.05, max_depth=3, **common)
        if kind == "gbt"
        else RandomForestClassifier(max_depth=None, **common)
    )
    oracle = cross_val_score(
        make_pipeline(FunctionTransformer(interaction_features), est), X, y, cv=cv, scoring="roc_auc"
    )
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=1e-12)
    assert ours.mean() > 0.8
    cal = CalibratedClassifierCV(clone(probe), cv=cv).fit(X[:400], y[:400]).predict_proba(X[400:])
    assert cal.shape == (200, 2)
    np.testing.assert_allclose(cal.sum(1), 1.0, atol=1e-12)
