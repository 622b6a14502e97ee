"""The consistency head: predicts self-consistency S_SC from one residual, per layer, all layers at once.

S_SC (method.md §5) is a fraction in [1/K, 1]: the share of K sampled answers in the largest
canonical-answer cluster. The head is a *fractional logistic regression* (Papke & Wooldridge
1996's quasi-binomial regression) per layer with an L2 penalty: it minimizes scikit-learn's
logistic objective with the fraction as a soft label,

    C * sum_i [softplus(z_i) - s_i z_i] + |w|^2 / 2,    z_i = ((x_i - mean_) / scale_) . w + b,

so its prediction ``expit(z)`` stays in (0, 1) like the quantity it predicts, the value of C means
what it means for the correctness probes (:mod:`vrp.probes.linear`), and the batched L-BFGS solver
of those probes fits every layer and every C in one loop. The minimizer is that of scikit-learn's
``LogisticRegression(C)`` fitted on every row twice, labelled 1 with weight ``s_i`` and 0 with
weight ``1 - s_i``: the test oracle. A live monitor applies it with the correctness probe's
formula, ``sigmoid(((h - mean) / scale) . coef + intercept)``.

:class:`ConsistencyHead` keeps scikit-learn's regressor contract (``fit`` returns self, fitted
attributes end in ``_``, ``predict`` [n], ``score`` = R^2 via ``RegressorMixin``); like
:class:`~vrp.probes.linear.LayerwiseLogistic` it fits every layer of X [n, L, d] and answers with
the layer of its ``layer`` parameter (:meth:`ConsistencyHead.predict_layers` gives every layer's).
:func:`sweep_consistency` chooses C per layer and the layer on the validation items' mean squared
error. Saved and loaded with :mod:`vrp.probes.io` (safetensors + JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from vrp.probes.linear import _check_X, _decision, _solve, _standardize, _strengths, _warn_unconverged, layer_index

_NAMES = ("coef_", "intercept_", "mean_", "scale_", "n_iter_", "converged_")


def check_target(s, n: int) -> np.ndarray:
    """The target as float32 [n]: finite fractions in [0, 1], not all equal (else a ValueError)."""
    s = np.asarray(s, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"the target must be [{n}] fractions, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("the target must be finite fractions in [0, 1] (self-consistency S_SC)")
    if n and (s == s[0]).all():
        raise ValueError(f"the target is the same for every item ({s[0]:g}): there is nothing to predict")
    return s.astype(np.float32)


class ConsistencyHead(RegressorMixin, BaseEstimator):
    """Fractional logistic regression of S_SC on the residual, one per layer, fitted at once.

    Args:
        C: inverse L2 strength as in scikit-learn; a float, or one value per layer.
        max_iter: L-BFGS iteration cap.
        tol: convergence threshold on max |gradient| of the objective divided by ``C * n``.
        standardize: standardize each unit of each layer on the training items.
        device: torch device of the computation.
        seed: seeds the randomized eigen-sketch behind the solver's preconditioner.
        layer: the fitted layer (an index into X's second axis; negative counts from the end)
            whose head ``predict`` uses. Every layer is fitted whatever its value.

    Fitted attributes: ``coef_`` [L, d] (standardized units), ``intercept_`` [L], ``mean_`` and
    ``scale_`` [L, d], ``n_iter_`` [L], ``converged_`` [L].
    """

    def __init__(self, C=1.0, max_iter=300, tol=1e-4, standardize=True, device="cpu", seed=0, layer: int = -1):
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

    def _layer_index(self, n_layers: int) -> int:
        return layer_index(self.layer, n_layers, "head")

    def fit(self, X, s) -> ConsistencyHead:
        """Fit every layer's head.

        Args:
            X: [n, L, d] residuals (or [n, d]: one layer); float16 accepted, computed in float32.
            s: [n] self-consistency fractions in [0, 1], not all equal.

        Returns:
            self.
        """
        X = _check_X(X)
        s = check_target(s, X.shape[0])
        self._layer_index(X.shape[1])
        C = np.array(np.broadcast_to(np.asarray(self.C, dtype=np.float64), (X.shape[1],)))[:, None]  # [L, 1]
        _strengths("l2", C, X.shape[0])
        Xs, mean, scale = _standardize(X, self.standardize, self.device)
        theta, n_iter, converged = _solve("l2", Xs, s, C, self.max_iter, self.tol, self.seed)
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

    def decision_function_layers(self, X) -> np.ndarray:
        """Every layer's logit of S_SC: float64 [n, L] for X [n, L, d] (or [n, d], one layer)."""
        check_is_fitted(self, "coef_")
        X = _check_X(X, self.coef_.shape[0])
        return _decision(X, self.mean_, self.scale_, self.coef_[:, None], self.intercept_[:, None], self.device)[..., 0]

    def predict_layers(self, X) -> np.ndarray:
        """Every layer's predicted S_SC in (0, 1): float64 [n, L]."""
        return expit(self.decision_function_layers(X))

    def predict(self, X) -> np.ndarray:
        """The ``layer`` head's predicted S_SC in (0, 1): float64 [n] (``predict_layers(X)[:, layer]``)."""
        check_is_fitted(self, "coef_")
        return self.predict_layers(X)[:, self._layer_index(self.coef_.shape[0])]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON metadata for :func:`vrp.probes.io.save_probe`."""
        params = self.get_params()
        params["C"] = np.asarray(self.C, dtype=np.float64).tolist()
        params["layer"] = int(self.layer)
        return {k.rstrip("_"): np.ascontiguousarray(getattr(self, k)) for k in _NAMES}, {"params": params}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> ConsistencyHead:
        """Inverse of :meth:`get_state`."""
        head = cls(**meta["params"])
        for k in _NAMES:
            setattr(head, k, np.asarray(tensors[k.rstrip("_")]))
        return head


@dataclass(frozen=True, eq=False)
class ConsistencySweep:
    """Outcome of :func:`sweep_consistency`: C chosen per layer on validation MSE, then the layer.

    ``model`` holds, for each layer, the head fitted with that layer's best C, and ``layer`` set
    to the chosen layer.
    """

    Cs: tuple[float, ...]  # ascending
    best_C: np.ndarray  # [L]
    val_mse: np.ndarray  # [L, len(Cs)]
    model: ConsistencyHead

    @property
    def best_val_mse(self) -> np.ndarray:
        """[L] validation MSE at each layer's best C."""
        return self.val_mse.min(axis=1)

    @property
    def best_layer(self) -> int:
        """The layer with the lowest validation MSE (the first on ties)."""
        return int(np.argmin(self.best_val_mse))


def sweep_consistency(X_train, s_train, X_val, s_val, *, Cs, **kw) -> ConsistencySweep:
    """Fit every (layer, C) head at once on train; choose C per layer, then the layer, on validation MSE.

    Args:
        X_train: [n, L, d] training residuals; s_train [n] their S_SC.
        X_val: [m, L, d] validation residuals; s_val [m] their S_SC (any values in [0, 1]).
        Cs: the grid of C (sorted ascending; on a tie the smaller C, the stronger regularization, wins).
        **kw: other :class:`ConsistencyHead` arguments (max_iter, tol, standardize, device, seed).

    Returns:
        The :class:`ConsistencySweep`; its model's ``layer`` is the chosen layer. No other split is read.
    """
    X_train = _check_X(X_train)
    X_val = _check_X(X_val, X_train.shape[1])
    s = check_target(s_train, X_train.shape[0])
    s_val = np.asarray(s_val, dtype=np.float64)
    if s_val.shape != (X_val.shape[0],) or not X_val.shape[0] or not np.isfinite(s_val).all():
        raise ValueError(f"s_val must be [{X_val.shape[0]}] finite fractions (at least one item)")
    Cs = tuple(sorted(float(c) for c in Cs))
    head = ConsistencyHead(**kw)
    n, L, _ = X_train.shape
    C = np.tile(np.asarray(Cs), (L, 1))  # [L, K]
    _strengths("l2", C, n)
    Xs, mean, scale = _standardize(X_train, head.standardize, head.device)
    theta, n_iter, converged = _solve("l2", Xs, s, C, head.max_iter, head.tol, head.seed)
    del Xs
    _warn_unconverged(converged, head.max_iter)
    W, b = theta[..., :-1], theta[..., -1]  # [L, K, d], [L, K]
    pred = expit(_decision(X_val, mean, scale, W, b, head.device))  # [m, L, K]
    val_mse = ((pred - s_val[:, None, None]) ** 2).mean(0)  # [L, K]
    best = val_mse.argmin(1)  # [L]: the first (smallest) C among ties
    rows, cols = torch.arange(L), torch.from_numpy(best)
    head.set_params(C=np.asarray(Cs)[best])
    head._set_fitted(theta[rows, cols], mean, scale, n_iter[rows, cols], converged[rows, cols])
    res = ConsistencySweep(Cs, head.C, val_mse, head)
    head.set_params(layer=res.best_layer)
    return res
