"""Linear probes (vrp.probes.linear), the grouped split and probe I/O.

Oracle: scikit-learn's StandardScaler + LogisticRegression on the same split with the same C
(lbfgs for L2, saga for L1: both leave the intercept unpenalized, as ours does).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy.special import expit
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from vrp.probes import _solver
from vrp.probes.io import load_probe, save_probe
from vrp.probes.linear import LayerwiseLogistic, StackedLogistic, auroc, sweep, sweep_stacked
from vrp.probes.split import Split, grouped_stratified_split

PLANTED_LAYER, PLANTED_UNITS = 2, (3, 7, 11)


def planted(n=600, L=4, d=32, seed=0):
    """X [n, L, d] float32 with unit offsets/scales and shared factors; y depends on 3 units of layer 2 only."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, L, d))
    for layer in range(L):  # a few factors per layer: correlated units, as in activations
        X[:, layer] = rng.standard_normal((n, 4)) @ rng.standard_normal((4, d)) * 0.7 + rng.standard_normal((n, d))
    score = X[:, PLANTED_LAYER, list(PLANTED_UNITS)] @ np.array([1.5, -1.5, 1.2])
    y = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.int64)
    X = X * rng.uniform(0.5, 20, (1, L, d)) + rng.normal(0, 50, (1, L, d))  # standardization matters
    groups = np.repeat(np.arange(n), rng.integers(1, 5, n))[:n]  # 1-4 items per "image"
    return X.astype(np.float32), y, groups


@pytest.fixture(scope="module")
def data():
    X, y, groups = planted()
    split = grouped_stratified_split(y, groups, seed=0)
    return X, y, groups, split


def sklearn_fit(X, y, split, layer, penalty, C):
    """(test AUROC, coef in standardized units) of scikit-learn on one layer."""
    scaler = StandardScaler().fit(X[split.train, layer])
    kw = {"solver": "lbfgs", "l1_ratio": 0.0} if penalty == "l2" else {"solver": "saga", "l1_ratio": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=C, tol=1e-7, max_iter=5000, **kw)
        lr.fit(scaler.transform(X[split.train, layer]), y[split.train])
    return roc_auc_score(y[split.test], lr.decision_function(scaler.transform(X[split.test, layer]))), lr.coef_[0]


@pytest.mark.parametrize(
    ("penalty", "C", "newton_max"),
    [("l2", 0.01, None), ("l2", 1.0, None), ("l1", 0.05, None), ("l1", 1.0, None), ("l1", 0.05, 0), ("l1", 1.0, 0)],
)
def test_matches_sklearn_oracle(data, penalty, C, newton_max, monkeypatch):
    X, y, _, split = data
    if newton_max is not None:  # 0: every L1 working set through OWL-QN (None: the default split)
        monkeypatch.setattr(_solver, "NEWTON_MAX", newton_max)
    probe = LayerwiseLogistic(penalty=penalty, C=C, tol=1e-6, max_iter=2000).fit(X[split.train], y[split.train])
    assert probe.converged_.all()
    ours = auroc(probe.decision_function_layers(X[split.test]), y[split.test])  # [L]
    for layer in range(X.shape[1]):
        sk_auc, sk_coef = sklearn_fit(X, y, split, layer, penalty, C)
        if np.all(sk_coef == 0):  # every weight zeroed: a constant score, undefined here (sklearn: 0.5)
            assert np.isnan(ours[layer]) and np.all(probe.coef_[layer] == 0)
        else:
            assert abs(ours[layer] - sk_auc) <= 0.01, (layer, ours[layer], sk_auc)
        np.testing.assert_allclose(probe.coef_[layer], sk_coef, atol=5e-3 * max(1.0, np.abs(sk_coef).max()))
        if penalty == "l1":  # the same units selected (up to coefficients at the solver tolerance)
            big = np.abs(sk_coef) > 1e-2
            assert (probe.coef_[layer][big] != 0).all()


def test_planted_layer_and_units_recovered(data):
    X, y, _, split = data
    args = (X[split.train], y[split.train], X[split.val], y[split.val])
    dense = sweep(*args, penalty="l2", Cs=(0.001, 0.01, 0.1, 1.0))
    sparse = sweep(*args, penalty="l1", Cs=(0.01, 0.03, 0.1, 0.3))
    assert dense.best_layer == PLANTED_LAYER and sparse.best_layer == PLANTED_LAYER
    assert dense.best_val_auroc[PLANTED_LAYER] > 0.75
    assert np.all(np.delete(dense.best_val_auroc, PLANTED_LAYER) < 0.65)
    selected = set(sparse.model.selected_units()[PLANTED_LAYER].tolist())
    assert set(PLANTED_UNITS) <= selected and len(selected) <= len(PLANTED_UNITS) + 4, selected
    nnz = (sparse.coef_path != 0).sum(-1)  # [L, K]: the support grows as the penalty weakens
    assert (np.diff(nnz, axis=1) >= 0).all()


def test_sweep_model_is_the_best_column_of_the_path(data):
    X, y, _, split = data
    res = sweep(X[split.train], y[split.train], X[split.val], y[split.val], penalty="l2", Cs=(1.0, 0.01))
    assert res.Cs == (0.01, 1.0) and res.val_auroc.shape == (4, 2)
    best = np.array([res.Cs.index(c) for c in res.best_C])
    np.testing.assert_array_equal(best, res.val_auroc.argmax(1))
    path = res.decision_function_path(X[split.test])  # [n, L, K]
    np.testing.assert_allclose(
        res.model.decision_function_layers(X[split.test]), path[:, np.arange(4), best], rtol=1e-5, atol=1e-5
    )
    refit = LayerwiseLogistic(C=res.best_C).fit(X[split.train], y[split.train])  # per-layer C
    np.testing.assert_allclose(refit.coef_, res.model.coef_, atol=1e-3)
    json.dumps(res.to_dict())


def test_l1_owlqn_branch_agrees_with_newton(data, monkeypatch):
    X, y, _, split = data
    newton = LayerwiseLogistic(penalty="l1", C=0.3, tol=1e-6).fit(X[split.train], y[split.train])
    monkeypatch.setattr(_solver, "NEWTON_MAX", 0)  # every working set through OWL-QN
    owlqn = LayerwiseLogistic(penalty="l1", C=0.3, tol=1e-6, max_iter=3000).fit(X[split.train], y[split.train])
    assert owlqn.converged_.all()
    np.testing.assert_allclose(owlqn.coef_, newton.coef_, atol=2e-3)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_a_layer_fits_the_same_alone_or_in_the_batch(penalty, monkeypatch):
    """Layers of very different difficulty: converged layers leave the batch early; no layer's result depends on it."""
    monkeypatch.setattr(_solver, "NEWTON_MAX", 0)
    rng = np.random.default_rng(3)
    n, L, d = 400, 5, 160  # d > the preconditioner's rank
    Xs = torch.empty(L, n, d)
    for layer in range(L):  # from nearly isotropic to strongly low-rank units
        f = rng.standard_normal((n, 6)) @ rng.standard_normal((6, d)) * (0.5 * layer)
        x = torch.from_numpy(f + rng.standard_normal((n, d)))
        Xs[layer] = ((x - x.mean(0)) / x.std(0)).float()
    y = torch.from_numpy((rng.random(n) < 1 / (1 + np.exp(-Xs[2, :, :4].sum(1).numpy()))).astype(np.float32))
    lam = torch.tensor([[1 / (0.1 * n), 1 / (1.0 * n)]] * L, dtype=torch.float64)
    kw = {"max_iter": 3000, "tol": 1e-6}
    fit = (
        (lambda X, lam: _solver.solve_l1(X, y, lam, **kw))
        if penalty == "l1"
        else (lambda X, lam: _solver.solve(X, y, lam, rank=0, **kw))  # plain L-BFGS: conditioning sets the pace
    )
    batch, it_batch, ok_batch = fit(Xs, lam)
    assert ok_batch.all() and len(set(it_batch[:, 1].tolist())) > 1  # layers finished at different iterations
    for layer in range(L):
        alone, _, ok = fit(Xs[layer : layer + 1], lam[layer : layer + 1])
        assert ok.all()
        np.testing.assert_allclose(alone[0].numpy(), batch[layer].numpy(), atol=2e-3)


def test_l2_preconditioner_changes_speed_not_solution():
    rng = np.random.default_rng(1)
    n, d = 300, 120  # d > rank so the eigen-sketch is used
    Xs = torch.from_numpy(rng.standard_normal((n, 8)) @ rng.standard_normal((8, d)) + rng.standard_normal((n, d)))
    Xs = ((Xs - Xs.mean(0)) / Xs.std(0)).float().unsqueeze(0)  # [1, n, d]
    y = torch.from_numpy((rng.random(n) < 0.4).astype(np.float32))
    l2 = torch.tensor([[1 / (0.1 * n), 1 / (10.0 * n)]], dtype=torch.float64)
    plain, it_plain, ok_plain = _solver.solve(Xs, y, l2, max_iter=2000, tol=1e-6, rank=0)
    pre, it_pre, ok_pre = _solver.solve(Xs, y, l2, max_iter=2000, tol=1e-6, rank=16)
    assert ok_plain.all() and ok_pre.all()
    np.testing.assert_allclose(pre.numpy(), plain.numpy(), atol=1e-3)
    assert it_pre.sum() < it_plain.sum()


def test_float16_input_is_computed_in_float32(data):
    X, y, _, split = data
    X16 = X.astype(np.float16)
    a = LayerwiseLogistic(C=0.1).fit(X16[split.train], y[split.train])
    b = LayerwiseLogistic(C=0.1).fit(X16[split.train].astype(np.float32), y[split.train])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.coef_.dtype == np.float32
    np.testing.assert_array_equal(
        a.predict_proba_layers(X16[split.test]), b.predict_proba_layers(X16[split.test].astype(np.float32))
    )


def test_stacked_probe_uses_last_k_layers(data):
    X, y, _, split = data
    tr, te = split.train, split.test
    probe = StackedLogistic(k=2, C=0.1).fit(X[tr], y[tr])  # layers 2 and 3
    assert probe.coef_.shape == (2 * X.shape[2],) and probe.predict_proba(X[te]).shape == (len(te), 2)
    scrambled = X.copy()
    scrambled[:, :2] = np.random.default_rng(0).standard_normal(scrambled[:, :2].shape)
    np.testing.assert_array_equal(probe.predict_proba(scrambled[te]), probe.predict_proba(X[te]))
    # oracle: sklearn on the standardized concatenation of the same layers
    Xk = X[:, 2:].reshape(len(X), -1)
    scaler = StandardScaler().fit(Xk[tr])
    lr = LogisticRegression(C=0.1, tol=1e-8, max_iter=5000).fit(scaler.transform(Xk[tr]), y[tr])
    sk_auc = roc_auc_score(y[te], lr.decision_function(scaler.transform(Xk[te])))
    assert abs(auroc(probe.decision_function(X[te]), y[te]) - sk_auc) <= 0.01
    assert sk_auc > 0.75
    last_only = StackedLogistic(k=1, C=0.1).fit(X[tr], y[tr])  # layer 3 holds no signal
    assert auroc(last_only.decision_function(X[te]), y[te]) < 0.65
    res = sweep_stacked(X[tr], y[tr], X[split.val], y[split.val], k=2, Cs=(0.01, 0.1))
    assert isinstance(res.model, StackedLogistic) and res.val_auroc.shape == (1, 2)
    assert res.model.predict_proba(X[te]).shape == (len(te), 2)


def test_save_load_gives_identical_predictions(data, tmp_path):
    X, y, _, split = data
    tr, te = split.train, split.test
    probes = [
        LayerwiseLogistic(penalty="l2", C=0.1).fit(X[tr], y[tr]),
        LayerwiseLogistic(penalty="l1", C=0.1).fit(X[tr], y[tr]),
        sweep(X[tr], y[tr], X[split.val], y[split.val], penalty="l1", Cs=(0.03, 0.3)).model,  # per-layer C
        StackedLogistic(k=3, penalty="l2", C=0.05).fit(X[tr], y[tr]),
    ]
    for i, probe in enumerate(probes):
        d = save_probe(probe, tmp_path / f"p{i}")
        assert sorted(p.name for p in d.iterdir()) == ["probe.json", "probe.safetensors"]
        doc = json.loads((d / "probe.json").read_text())
        assert doc["class"] == type(probe).__name__ and doc["vrp_version"]
        loaded = load_probe(d)
        assert type(loaded) is type(probe)
        assert json.dumps(loaded.get_state()[1]) == json.dumps(probe.get_state()[1])
        np.testing.assert_array_equal(loaded.predict_proba(X[te]), probe.predict_proba(X[te]))
        if isinstance(probe, LayerwiseLogistic):
            np.testing.assert_array_equal(loaded.predict_proba_layers(X[te]), probe.predict_proba_layers(X[te]))


def test_probe_io_errors(tmp_path):
    with pytest.raises(TypeError, match="known probe classes"):
        save_probe(LogisticRegression(), tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        load_probe(tmp_path / "missing")
    d = tmp_path / "bad"
    d.mkdir()
    (d / "probe.json").write_text(json.dumps({"format": "vrp-probe-1", "class": "os.system", "meta": {}}))
    with pytest.raises(ValueError, match="unknown probe class"):
        load_probe(d)


def test_sklearn_conventions(data):
    X, y, _, split = data
    probe = LayerwiseLogistic(penalty="l1", C=0.5, tol=1e-5)
    assert clone(probe).get_params() == probe.get_params()
    with pytest.raises(NotFittedError):
        probe.predict_proba(X)
    assert probe.fit(X[split.train], y[split.train]) is probe
    assert probe.predict_proba(X[:5]).shape == (5, 2) and probe.predict(X[:5]).shape == (5,)
    assert probe.decision_function(X[:5]).shape == (5,) and probe.predict_proba_layers(X[:5]).shape == (5, X.shape[1])
    with pytest.raises(ValueError, match="both classes"):
        LayerwiseLogistic().fit(X[:20], np.ones(20))
    with pytest.raises(ValueError, match="penalty"):
        LayerwiseLogistic(penalty="elasticnet").fit(X, y)
    with pytest.raises(ValueError, match="layers"):
        probe.predict_proba(X[:, :2])


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = rng.integers(0, 5, (200, 3)).astype(float)  # many ties
    np.testing.assert_allclose(auroc(scores, y), [roc_auc_score(y, s) for s in scores.T])


def test_split_properties():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(300), rng.integers(1, 6, 300))  # ~900 items, 1-5 per image
    labels = (rng.random(len(groups)) < 0.3).astype(int)
    split = grouped_stratified_split(labels, groups, seed=0)
    sides = [split.train, split.val, split.test]
    assert np.array_equal(np.sort(np.concatenate(sides)), np.arange(len(groups)))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(groups[sides[a]]) & set(groups[sides[b]])
    np.testing.assert_allclose([len(s) / len(groups) for s in sides], [0.6, 0.2, 0.2], atol=0.02)
    np.testing.assert_allclose([labels[s].mean() for s in sides], labels.mean(), atol=0.03)
    again = grouped_stratified_split(labels, groups, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(sides, [again.train, again.val, again.test], strict=True))
    other = grouped_stratified_split(labels, groups, seed=1)
    assert not np.array_equal(other.train, split.train)
    assert Split.from_dict(json.loads(json.dumps(split.to_dict()))).to_dict() == split.to_dict()
    custom = grouped_stratified_split(labels, groups, fractions=(0.5, 0.25, 0.25), seed=0)
    np.testing.assert_allclose(len(custom.train) / len(groups), 0.5, atol=0.02)


def test_split_errors():
    groups = np.arange(10)
    with pytest.raises(ValueError, match="two classes"):
        grouped_stratified_split(np.zeros(10), groups)
    with pytest.raises(ValueError, match="3 groups"):
        grouped_stratified_split(np.arange(10) % 2, np.arange(10) % 2)
    with pytest.raises(ValueError, match="only 2 group"):
        grouped_stratified_split(np.r_[np.zeros(8), 1, 1], groups)
    with pytest.raises(ValueError, match="fractions"):
        grouped_stratified_split(np.arange(10) % 2, groups, fractions=(0.6, 0.3, 0.3))
    with pytest.raises(ValueError, match="1-D"):
        grouped_stratified_split(np.arange(10) % 2, groups[:9])


def test_auroc_of_a_constant_score_is_undefined_and_never_chosen():
    y = np.array([0, 1, 0, 1, 1])
    scores = np.stack([np.full(5, 0.3), [0.1, 0.9, 0.2, 0.8, 0.7]], axis=1)
    got = auroc(scores, y)
    assert np.isnan(got[0]) and got[1] == 1.0
    from vrp.probes.linear import nan_argmax

    assert nan_argmax(np.array([np.nan, 0.2, 0.6, np.nan])) == 2


# ---------------------------------------------------------------- the scikit-learn classifier contract


def _oracle(C: float, penalty: str = "l2"):
    """scikit-learn's standardized logistic regression, the oracle of one layer's probe."""
    kw = {"solver": "lbfgs", "l1_ratio": 0.0} if penalty == "l2" else {"solver": "saga", "l1_ratio": 1.0}
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-8, max_iter=10000, **kw))


CV = StratifiedKFold(5, shuffle=True, random_state=0)


@pytest.mark.parametrize(("penalty", "C", "layer"), [("l2", 0.1, 2), ("l2", 0.1, -1), ("l1", 0.1, 2)])
def test_cross_val_score_of_a_clone_matches_sklearn_on_that_layer(data, penalty, C, layer):
    X, y, _, _ = data
    tol = 1e-7 if penalty == "l2" else 1e-6
    fitted = LayerwiseLogistic(penalty=penalty, C=C, tol=tol, max_iter=3000, layer=layer).fit(X, y)
    ours = cross_val_score(clone(fitted), X, y, cv=CV, scoring="roc_auc")  # X [n, L, d]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oracle = cross_val_score(_oracle(C, penalty), X[:, layer], y, cv=CV, scoring="roc_auc")
    np.testing.assert_allclose(ours, oracle, atol=1e-3)
    if layer == PLANTED_LAYER:  # the planted layer's probe is informative: the comparison means something
        assert ours.mean() > 0.75
    else:
        assert ours.mean() < 0.65


def test_stacked_cross_val_score_matches_sklearn_on_the_concatenation(data):
    X, y, _, _ = data
    fitted = StackedLogistic(k=2, C=0.1, tol=1e-7, max_iter=3000).fit(X, y)
    ours = cross_val_score(clone(fitted), X, y, cv=CV, scoring="roc_auc")
    oracle = cross_val_score(_oracle(0.1), X[:, -2:].reshape(len(X), -1), y, cv=CV, scoring="roc_auc")
    np.testing.assert_allclose(ours, oracle, atol=1e-3)
    assert ours.mean() > 0.75


def test_two_d_input_is_one_layer(data):
    X, y, _, split = data
    tr, te = split.train, split.test
    probe = LayerwiseLogistic(C=0.1, tol=1e-7, max_iter=3000).fit(X[tr, PLANTED_LAYER], y[tr])  # [n, d]
    assert probe.coef_.shape == (1, X.shape[2])
    oracle = _oracle(0.1).fit(X[tr, PLANTED_LAYER], y[tr])
    np.testing.assert_allclose(
        probe.decision_function(X[te, PLANTED_LAYER]), oracle.decision_function(X[te, PLANTED_LAYER]), atol=2e-3
    )
    np.testing.assert_array_equal(
        probe.decision_function(X[te, PLANTED_LAYER]), probe.decision_function(X[te, PLANTED_LAYER][:, None])
    )
    ours = cross_val_score(LayerwiseLogistic(C=0.1, tol=1e-7), X[:, PLANTED_LAYER], y, cv=CV, scoring="roc_auc")
    want = cross_val_score(_oracle(0.1), X[:, PLANTED_LAYER], y, cv=CV, scoring="roc_auc")
    np.testing.assert_allclose(ours, want, atol=1e-3)
    multi = LayerwiseLogistic(C=0.1).fit(X[tr], y[tr])
    with pytest.raises(ValueError, match="1 layers, the probe was fitted on 4"):
        multi.predict_proba(X[te, 0])  # a 2-D X is one layer, not the chosen one


@pytest.mark.parametrize("layer", [1, -2])
def test_sklearn_methods_are_the_chosen_layer_of_the_per_layer_view(data, layer):
    X, y, _, split = data
    tr, te = split.train, split.test
    probe = LayerwiseLogistic(C=0.1, layer=layer).fit(X[tr], y[tr])
    k = layer % X.shape[1]
    proba = probe.predict_proba(X[te])  # [n, 2]
    assert proba.shape == (len(te), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(proba[:, 1], probe.predict_proba_layers(X[te])[:, k])
    np.testing.assert_array_equal(proba[:, 0], 1.0 - proba[:, 1])
    logits = probe.decision_function_layers(X[te])  # [n, L]
    np.testing.assert_array_equal(probe.decision_function(X[te]), logits[:, k])
    np.testing.assert_array_equal(probe.predict_proba_layers(X[te]), expit(logits))
    labels = probe.predict(X[te])
    np.testing.assert_array_equal(labels, (logits[:, k] > 0).astype(np.int64))
    np.testing.assert_array_equal(labels, probe.classes_[proba.argmax(1)])
    assert probe.score(X[te], y[te]) == accuracy_score(y[te], labels)
    other = clone(probe).set_params(layer=0).fit(X[tr], y[tr])  # every layer is fitted whatever `layer` is
    np.testing.assert_array_equal(other.coef_, probe.coef_)
    np.testing.assert_array_equal(other.predict_proba(X[te])[:, 1], probe.predict_proba_layers(X[te])[:, 0])


def test_calibrated_classifier_cv_accepts_the_probes(data):
    X, y, _, split = data
    tr, te = split.train, split.test
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    ours = CalibratedClassifierCV(LayerwiseLogistic(C=0.1, tol=1e-7, layer=PLANTED_LAYER), cv=cv).fit(X[tr], y[tr])
    oracle = CalibratedClassifierCV(_oracle(0.1), cv=cv).fit(X[tr, PLANTED_LAYER], y[tr])
    p = ours.predict_proba(X[te])
    assert p.shape == (len(te), 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(p, oracle.predict_proba(X[te, PLANTED_LAYER]), atol=1e-3)
    assert roc_auc_score(y[te], p[:, 1]) > 0.75
    stacked = CalibratedClassifierCV(StackedLogistic(k=2, C=0.1, tol=1e-7), cv=cv).fit(X[tr], y[tr])
    want = CalibratedClassifierCV(_oracle(0.1), cv=cv).fit(X[tr, -2:].reshape(len(tr), -1), y[tr])
    np.testing.assert_allclose(
        stacked.predict_proba(X[te]), want.predict_proba(X[te, -2:].reshape(len(te), -1)), atol=1e-3
    )


@pytest.mark.parametrize("make", [lambda: LayerwiseLogistic(C=[0.1, 1.0, 0.3, 0.01], layer=2, penalty="l1"),
                                  lambda: StackedLogistic(k=3, C=0.05)])  # fmt: skip
def test_clone_keeps_params_and_drops_fitted_state(data, make):
    X, y, _, split = data
    probe = make().fit(X[split.train], y[split.train])
    assert is_classifier(probe) and probe.__sklearn_tags__().input_tags.three_d_array
    copy = clone(probe)
    assert type(copy) is type(probe)
    assert copy.get_params() == probe.get_params()
    fitted = [a for a in vars(probe) if a.endswith("_") and not a.startswith("_")]
    assert {"coef_", "intercept_", "classes_"} <= set(fitted)
    assert not [a for a in vars(copy) if a.endswith("_")]
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(NotFittedError):
        copy.predict_proba(X[:3])


def test_layer_is_validated_saved_and_defaults_for_old_files(data, tmp_path):
    X, y, _, split = data
    tr, te = split.train, split.test
    with pytest.raises(ValueError, match="layer=4 is not one of the probe's 4 layers"):
        LayerwiseLogistic(layer=4).fit(X[tr], y[tr])
    with pytest.raises(ValueError, match=r"layer=1\.5"):
        LayerwiseLogistic(layer=1.5).fit(X[tr], y[tr])
    probe = LayerwiseLogistic(C=0.1, layer=-3).fit(X[tr], y[tr])
    loaded = load_probe(save_probe(probe, tmp_path / "new"))
    assert loaded.layer == -3
    np.testing.assert_array_equal(loaded.predict_proba(X[te]), probe.predict_proba(X[te]))
    tensors, meta = probe.get_state()
    assert meta["params"]["layer"] == -3
    del meta["params"]["layer"]  # a probe saved before `layer` existed
    old = LayerwiseLogistic.from_state(tensors, json.loads(json.dumps(meta)))
    assert old.layer == -1
    np.testing.assert_array_equal(old.predict_proba(X[te])[:, 1], probe.predict_proba_layers(X[te])[:, -1])
    with pytest.raises(ValueError, match="layer=-5"):
        probe.set_params(layer=-5).predict(X[te])
