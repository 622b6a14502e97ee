"""Dense (L2) and sparse (L1) logistic probes on every layer at once, and the stacked probe.

All layers are fitted together: the activations are laid out layer-major [L, n, d] and batched
solvers (:mod:`vrp.probes._solver`) run every layer, and in :func:`sweep` every value of C, in one
loop: L2 by L-BFGS preconditioned on each layer's top principal directions (all C at once, two
reads of the activations per iteration); L1 by working sets (C ascending, warm-started) solved by
a preconditioned OWL-QN (an orthant-wise Newton method on working sets of at most 128 units);
converged layers leave the batch. The objective is
scikit-learn's (``C * sum(log-loss) + penalty``, intercept unpenalized), so C means the same thing
and ``LogisticRegression`` is the test oracle. Inputs may be float16; all arithmetic on them is
float32 (float64 for line searches), apart from what only shapes search directions (the L1
Newton matrix, the preconditioner's eigen-sketch), which is bfloat16 where matrix units make
that fast.

Standardization (per layer and unit, mean and population standard deviation fitted on the
training items; constant units get scale 1, as in ``StandardScaler``) is part of the estimator,
so ``coef_`` lives in standardized units: ``decision = ((x - mean_) / scale_) @ coef_ + intercept_``.

The estimators keep scikit-learn's classifier contract (``predict_proba`` [n, 2], ``decision_function``
and ``predict`` [n], ``classes_ = [0, 1]``), so ``clone``, ``cross_val_score`` and
``CalibratedClassifierCV`` take them as they are. :class:`LayerwiseLogistic` answers these with the
probe of one layer (its ``layer`` parameter); the per-layer view is
:meth:`LayerwiseLogistic.decision_function_layers` / :meth:`LayerwiseLogistic.predict_proba_layers`.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from vrp.probes._common import proba_columns
from vrp.probes._solver import solve, solve_l1

_CHUNK = 1024  # items per block when predicting


def auroc(scores, y) -> np.ndarray:
    """AUROC of every column of ``scores`` [n, ...] against binary ``y`` [n] (rank formula, ties averaged).

    A column whose scores are all equal (e.g. a probe on a layer that is the same for every
    item) has no ranking: its AUROC is NaN (undefined), not 0.5.
    """
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes among the labels")
    s = np.asarray(scores, dtype=np.float64)
    ranks = rankdata(s, axis=0)
    out = (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((s == s[:1]).all(0), np.nan, out)


def nan_argmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """argmax ignoring NaN (the first index where everything is NaN)."""
    return np.where(np.isnan(a), -np.inf, a).argmax(axis)


def _check_X(X, n_layers: int | None = None) -> np.ndarray:
    """X as a float array [n, L, d]; a 2-D [n, d] array is one layer, [n, 1, d] (a view)."""
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3 or not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"X must be a float array [items, layers, units] or [items, units], got {X.dtype} {X.shape}")
    if n_layers is not None and X.shape[1] != n_layers:
        raise ValueError(f"X has {X.shape[1]} layers, the probe was fitted on {n_layers}")
    return X


def _check_y(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
        raise ValueError(f"y must be [{n}] labels in {{0, 1}} holding both classes, got shape {y.shape}")
    return y.astype(np.float32)


def _standardize(X: np.ndarray, standardize: bool, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer-major standardized float32 copy [L, n, d], with mean and scale [L, d].

    Constant units (standard deviation within float32 rounding of the mean) get scale 1.
    """
    n, L, d = X.shape
    Xt = torch.from_numpy(X)
    out = torch.empty((L, n, d), dtype=torch.float32, device=device)
    mean = torch.zeros((L, d), dtype=torch.float32, device=device)
    scale = torch.ones((L, d), dtype=torch.float32, device=device)
    for layer in range(L):  # a data layout pass, one layer at a time to bound memory; no fitting here
        xl = Xt[:, layer, :].to(device, torch.float32)  # [n, d]
        if not standardize:
            out[layer] = xl
            continue
        mean[layer] = xl.mean(0)
        torch.sub(xl, mean[layer], out=out[layer])  # centered, then the two-pass variance
        std = out[layer].square().mean(0).sqrt()
        scale[layer] = torch.where(std > 1e-6 * mean[layer].abs().clamp(min=1.0), std, torch.ones_like(std))
        out[layer] /= scale[layer]
    return out, mean, scale


def _decision(X: np.ndarray, mean, scale, W, b, device) -> np.ndarray:
    """Logits [n, L, K] for weights W [L, K, d] and intercepts b [L, K] (standardized space)."""
    Xt = torch.from_numpy(X)
    dev = torch.device(device)
    mean, scale, W, b = (torch.as_tensor(a, device=dev, dtype=torch.float32) for a in (mean, scale, W, b))
    out = []
    for i in range(0, X.shape[0], _CHUNK):
        xc = (Xt[i : i + _CHUNK].to(dev, torch.float32) - mean) / scale  # [c, L, d]
        out.append(torch.einsum("cld,lkd->clk", xc, W) + b)
    return torch.cat(out).cpu().numpy().astype(np.float64)


def _strengths(penalty: str, C: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """l1, l2 strengths [L, K] of the mean-loss objective for C [L, K]."""
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    if not (np.isfinite(C).all() and (C > 0).all()):
        raise ValueError(f"C must be positive and finite, got {C}")
    lam = torch.from_numpy(1.0 / (C * n))
    zero = torch.zeros_like(lam)
    return (lam, zero) if penalty == "l1" else (zero, lam)


def _solve(penalty: str, Xs, y: np.ndarray, C: np.ndarray, max_iter: int, tol: float, seed: int):
    """Run the batched solver for C [L, K]; theta [L, K, d+1], n_iter [L, K], converged [L, K]."""
    l1, l2 = _strengths(penalty, C, Xs.shape[1])
    yt = torch.from_numpy(y)
    if penalty == "l1":
        return solve_l1(Xs, yt, l1, max_iter, tol)
    return solve(Xs, yt, l2, max_iter, tol, seed=seed)


def _warn_unconverged(converged: torch.Tensor, max_iter: int) -> None:
    if not bool(converged.all()):
        layers = sorted({int(i) for i in torch.nonzero(~converged)[:, 0]})
        warnings.warn(
            f"logistic probe did not converge within max_iter={max_iter} on layers {layers}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )


def layer_index(layer, n_layers: int, what: str) -> int:
    """An estimator's ``layer`` resolved to 0..n_layers-1 (negative counts from the end); a
    ValueError naming ``what`` (probe, head) when it is not one of the layers."""
    try:
        k = operator.index(layer)
    except TypeError:
        k = None
    if k is None or not -n_layers <= k < n_layers:
        raise ValueError(f"layer={layer!r} is not one of the {what}'s {n_layers} layers")
    return k % n_layers


class LayerwiseLogistic(ClassifierMixin, BaseEstimator):
    """One logistic regression per layer, all fitted at once; scikit-learn's methods use one of them.

    ``fit`` takes X [n, L, d] (or [n, d], one layer) and fits every layer's probe. The
    scikit-learn classifier methods (``decision_function``, ``predict_proba``, ``predict``,
    ``score``) answer with the probe of layer ``layer``; :meth:`decision_function_layers` and
    :meth:`predict_proba_layers` give every layer's.

    Args:
        penalty: ``"l2"`` (dense probe) or ``"l1"`` (sparse probe).
        C: inverse regularization strength as in scikit-learn; a float, or one value per layer.
        max_iter: iteration cap: of L-BFGS (L2), of each working-set round's solver (L1).
        tol: convergence threshold on max |(pseudo-)gradient| of the objective divided by ``C * n``
            (scikit-learn's lbfgs criterion).
        standardize: standardize each unit of each layer on the training items.
        device: torch device of the computation (``"cpu"``, ``"cuda"``).
        seed: seeds the randomized eigen-sketch behind the L2 solver's preconditioner.
        layer: the fitted layer (an index into X's second axis; negative counts from the end)
            whose probe the scikit-learn methods use. Every layer is fitted whatever its value.

    Fitted attributes: ``coef_`` [L, d] (standardized units), ``intercept_`` [L], ``mean_`` and
    ``scale_`` [L, d], ``n_iter_`` [L], ``converged_`` [L], ``classes_`` ([0, 1]).
    """

    def __init__(
        self, penalty="l2", C=1.0, max_iter=300, tol=1e-4, standardize=True, device="cpu", seed=0, layer: int = -1
    ):
        self.penalty = penalty
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.device = device
        self.seed = seed
        self.layer = layer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _C_per_layer(self, n_layers: int) -> np.ndarray:
        C = np.broadcast_to(np.asarray(self.C, dtype=np.float64), (n_layers,))
        return np.array(C)

    def _layer_index(self, n_layers: int) -> int:
        return layer_index(self.layer, n_layers, "probe")

    def fit(self, X, y) -> LayerwiseLogistic:
        """Fit every layer's probe.

        Args:
            X: [n, L, d] activations (or [n, d]: one layer); float16 accepted, computed in float32.
            y: [n] labels in {0, 1}, both present.

        Returns:
            self.
        """
        X = _check_X(X)
        y = _check_y(y, X.shape[0])
        self._layer_index(X.shape[1])  # validate before the fit
        C = self._C_per_layer(X.shape[1])[:, None]  # [L, 1]
        _strengths(self.penalty, C, X.shape[0])  # validate before the standardization pass
        Xs, mean, scale = _standardize(X, self.standardize, self.device)
        theta, n_iter, converged = _solve(self.penalty, Xs, y, C, self.max_iter, self.tol, self.seed)
        _warn_unconverged(converged, self.max_iter)
        self._set_fitted(theta[:, 0], mean, scale, n_iter[:, 0], converged[:, 0])
        return self

    def _set_fitted(self, theta, mean, scale, n_iter, converged) -> None:
        self.coef_ = theta[:, :-1].cpu().numpy()  # [L, d]
        self.intercept_ = theta[:, -1].cpu().numpy()  # [L]
        self.mean_ = mean.cpu().numpy()  # [L, d]
        self.scale_ = scale.cpu().numpy()  # [L, d]
        self.n_iter_ = n_iter.cpu().numpy()  # [L]
        self.converged_ = converged.cpu().numpy()  # [L]
        self.classes_ = np.array([0, 1])

    def decision_function_layers(self, X) -> np.ndarray:
        """Every layer's logits.

        Args:
            X: [n, L, d] activations of the fitted layers (or [n, d] for a one-layer probe).

        Returns:
            float64 [n, L]: column l is layer l's probe.
        """
        check_is_fitted(self, "coef_")
        X = _check_X(X, self.coef_.shape[0])
        return _decision(X, self.mean_, self.scale_, self.coef_[:, None], self.intercept_[:, None], self.device)[..., 0]

    def predict_proba_layers(self, X) -> np.ndarray:
        """Every layer's P(y = 1): float64 [n, L] for X [n, L, d] (``expit`` of :meth:`decision_function_layers`)."""
        return expit(self.decision_function_layers(X))

    def decision_function(self, X) -> np.ndarray:
        """Logits of the ``layer`` probe: float64 [n] for X [n, L, d] (or [n, d], one layer).

        Equal, bit for bit, to ``decision_function_layers(X)[:, layer]`` (it computes every layer's).
        """
        check_is_fitted(self, "coef_")
        return self.decision_function_layers(X)[:, self._layer_index(self.coef_.shape[0])]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities of the ``layer`` probe: float64 [n, 2], columns P(y = 0), P(y = 1) (``classes_``).

        Column 1 equals ``predict_proba_layers(X)[:, layer]``; X is [n, L, d] (or [n, d], one layer).
        """
        return proba_columns(expit(self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        """Labels of the ``layer`` probe: int64 [n] (1 where its logit is positive)."""
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    def selected_units(self) -> list[np.ndarray]:
        """Per layer, the units with a non-zero weight (the L1 probe's candidate reliability neurons)."""
        return [np.flatnonzero(w) for w in self.coef_]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON metadata for :func:`vrp.probes.io.save_probe`."""
        params = self.get_params()
        params["C"] = np.asarray(self.C, dtype=np.float64).tolist()
        params["layer"] = int(self.layer)
        names = ("coef_", "intercept_", "mean_", "scale_", "n_iter_", "converged_")
        return {k.rstrip("_"): np.ascontiguousarray(getattr(self, k)) for k in names}, {"params": params}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> LayerwiseLogistic:
        """Inverse of :meth:`get_state` (params saved before ``layer`` existed get the default, -1)."""
        probe = cls(**meta["params"])
        for k in ("coef", "intercept", "mean", "scale", "n_iter", "converged"):
            setattr(probe, k + "_", np.asarray(tensors[k]))
        probe.classes_ = np.array([0, 1])
        return probe


class StackedLogistic(ClassifierMixin, BaseEstimator):
    """Logistic probe on the concatenated last ``k`` layers: X [n, L, d] -> [n, k * d].

    A scikit-learn classifier: ``decision_function`` and ``predict`` [n], ``predict_proba`` [n, 2].

    Args:
        k: number of final layers stacked.
        penalty, C, max_iter, tol, standardize, device, seed: as in :class:`LayerwiseLogistic`.

    Fitted attributes: ``n_layers_in_``, ``probe_`` (a one-layer :class:`LayerwiseLogistic` on the
    stacked features), ``coef_`` [k * d] (layer-major: units of layer L-k first), ``intercept_``.
    """

    def __init__(self, k=5, penalty="l2", C=1.0, max_iter=300, tol=1e-4, standardize=True, device="cpu", seed=0):
        self.k = k
        self.penalty = penalty
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.device = device
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def stack(self, X) -> np.ndarray:
        """The stacked features [n, 1, k * d] of X [n, L, d] (a 2-D X [n, d] is one layer)."""
        X = _check_X(X, getattr(self, "n_layers_in_", None))
        if not 1 <= self.k <= X.shape[1]:
            raise ValueError(f"k={self.k} must be between 1 and the number of layers {X.shape[1]}")
        return X[:, -self.k :, :].reshape(X.shape[0], 1, -1)

    def fit(self, X, y) -> StackedLogistic:
        """Fit on X [n, L, d] and y [n] in {0, 1}; returns self."""
        Xk = self.stack(X)
        params = {k: v for k, v in self.get_params().items() if k != "k"}
        self.probe_ = LayerwiseLogistic(**params).fit(Xk, y)
        self._adopt(_check_X(X).shape[1])
        return self

    def _adopt(self, n_layers: int) -> None:
        self.n_layers_in_ = n_layers
        self.coef_ = self.probe_.coef_[0]  # [k * d]
        self.intercept_ = float(self.probe_.intercept_[0])
        self.classes_ = np.array([0, 1])

    def decision_function(self, X) -> np.ndarray:
        """Logits: float64 [n] for X [n, L, d]."""
        check_is_fitted(self, "probe_")
        return self.probe_.decision_function_layers(self.stack(X))[:, 0]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities: float64 [n, 2], columns P(y = 0), P(y = 1) (``classes_``), for X [n, L, d]."""
        return proba_columns(expit(self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        """Predicted labels: int64 [n] (1 where the logit is positive)."""
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON metadata for :func:`vrp.probes.io.save_probe`."""
        tensors, inner = self.probe_.get_state()
        params = self.get_params()
        params["C"] = np.asarray(self.C, dtype=np.float64).tolist()
        return tensors, {"params": params, "probe_params": inner["params"], "n_layers_in": self.n_layers_in_}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> StackedLogistic:
        """Inverse of :meth:`get_state`."""
        probe = cls(**meta["params"])
        probe.probe_ = LayerwiseLogistic.from_state(tensors, {"params": meta["probe_params"]})
        probe._adopt(int(meta["n_layers_in"]))
        return probe


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Outcome of :func:`sweep`: C chosen per layer on validation AUROC, and the whole C path.

    ``model`` holds, for each layer, the probe fitted with that layer's best C (a
    :class:`LayerwiseLogistic`, or a :class:`StackedLogistic` from :func:`sweep_stacked`).
    """

    Cs: tuple[float, ...]  # ascending
    best_C: np.ndarray  # [L]
    val_auroc: np.ndarray  # [L, len(Cs)]
    coef_path: np.ndarray  # [L, len(Cs), d] standardized units
    intercept_path: np.ndarray  # [L, len(Cs)]
    n_iter: np.ndarray  # [L, len(Cs)]
    model: LayerwiseLogistic | StackedLogistic

    @property
    def best_val_auroc(self) -> np.ndarray:
        """[L] validation AUROC at each layer's best C (NaN where every C is undefined)."""
        v = self.val_auroc
        return np.take_along_axis(v, nan_argmax(v, 1)[:, None], 1)[:, 0]

    @property
    def best_layer(self) -> int:
        """The layer with the highest validation AUROC (the first on ties)."""
        return int(nan_argmax(self.best_val_auroc))

    def decision_function_path(self, X) -> np.ndarray:
        """Logits [n, L, len(Cs)] of every (layer, C) probe of the path."""
        probe = self.model.probe_ if isinstance(self.model, StackedLogistic) else self.model
        X = self.model.stack(X) if isinstance(self.model, StackedLogistic) else _check_X(X, len(self.best_C))
        return _decision(X, probe.mean_, probe.scale_, self.coef_path, self.intercept_path, probe.device)

    def to_dict(self) -> dict:
        """JSON-ready summary (no coefficients)."""
        return {
            "Cs": list(self.Cs),
            "best_C": self.best_C.tolist(),
            "val_auroc": self.val_auroc.tolist(),
            "best_layer": self.best_layer,
        }


def sweep(X_train, y_train, X_val, y_val, penalty="l2", *, Cs, **kw) -> SweepResult:
    """Fit every (layer, C) probe at once on train; choose C per layer on validation AUROC.

    Args:
        X_train: [n, L, d] training activations; y_train [n] in {0, 1}.
        X_val: [m, L, d] validation activations; y_val [m] in {0, 1} (both classes present).
        penalty: ``"l2"`` or ``"l1"``.
        Cs: the grid of C (sorted ascending; on a tie the smaller C, the stronger
            regularization, wins).
        **kw: other :class:`LayerwiseLogistic` arguments (max_iter, tol, standardize, device, seed).

    Returns:
        The :class:`SweepResult`; the test split is not touched.
    """
    X_train = _check_X(X_train)
    X_val = _check_X(X_val, X_train.shape[1])
    y = _check_y(y_train, X_train.shape[0])
    y_val = _check_y(y_val, X_val.shape[0])
    Cs = tuple(sorted(float(c) for c in Cs))
    est = LayerwiseLogistic(penalty=penalty, **kw)
    n, L, _ = X_train.shape
    est._layer_index(L)  # validate before the fit
    C = np.tile(np.asarray(Cs), (L, 1))  # [L, K]
    _strengths(penalty, C, n)
    Xs, mean, scale = _standardize(X_train, est.standardize, est.device)
    theta, n_iter, converged = _solve(penalty, Xs, y, C, est.max_iter, est.tol, est.seed)
    del Xs
    _warn_unconverged(converged, est.max_iter)
    W, b = theta[..., :-1], theta[..., -1]  # [L, K, d], [L, K]
    val = auroc(_decision(X_val, mean, scale, W, b, est.device), y_val)  # [L, K]
    best = nan_argmax(val, 1)  # [L]: the first (smallest) C among ties
    rows, cols = torch.arange(L), torch.from_numpy(best)
    est.set_params(C=np.asarray(Cs)[best])
    est._set_fitted(theta[rows, cols], mean, scale, n_iter[rows, cols], converged[rows, cols])
    return SweepResult(Cs, est.C, val, W.cpu().numpy(), b.cpu().numpy(), n_iter.cpu().numpy(), est)


def sweep_stacked(X_train, y_train, X_val, y_val, k=5, penalty="l2", *, Cs, **kw) -> SweepResult:
    """:func:`sweep` for the stacked probe on the last ``k`` layers; ``model`` is a :class:`StackedLogistic`."""
    stacked = StackedLogistic(k=k, penalty=penalty, **kw)
    L = _check_X(X_train).shape[1]
    res = sweep(stacked.stack(X_train), y_train, stacked.stack(X_val), y_val, penalty, Cs=Cs, **kw)
    stacked.set_params(C=float(res.best_C[0]))
    stacked.probe_ = res.model
    stacked._adopt(L)
    return SweepResult(res.Cs, res.best_C, res.val_auroc, res.coef_path, res.intercept_path, res.n_iter, stacked)
