"""Two-layer MLP probe on one layer's residual stream (SPEC section 6).

:class:`MLPProbe` predicts ``correct`` from ``h_l`` with ``d -> hidden -> 1`` (ReLU, dropout), trained with
AdamW on the binary log-loss and early-stopped on a validation log-loss. Everything random (weight init,
dropout masks, mini-batch order, the internal validation split) is drawn from ``seed`` inside a forked torch
RNG, so two fits with the same seed and data give identical predictions on CPU (CUDA kernels may add
non-deterministic reductions) and the global RNG is untouched.

Saved without pickle through :meth:`MLPProbe.get_state` / :meth:`MLPProbe.from_state` (float32 arrays +
a JSON-serializable dict).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from vrp.probes._common import proba_columns

_PREDICT_BATCH = 8192
_MIN_IMPROVEMENT = 1e-4  # relative drop in validation log-loss that counts as an improvement


def _as_float32(X: Any, name: str) -> np.ndarray:
    """Check a 2-D finite feature matrix and return it as C-contiguous float32 (float16 is upcast)."""
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values (after the cast to float32); impute or drop them")
    return a


def _as_binary(y: Any, n: int, name: str) -> np.ndarray:
    """Check binary labels (0/1 or bool) of length ``n`` and return them as float32."""
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {a.shape}")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be binary 0/1 (or bool); got values {np.unique(a)[:10]}")
    return a.astype(np.float32)


class _Net(torch.nn.Module):
    """``d -> hidden -> 1``: Linear, ReLU, Dropout, Linear; returns logits [n]."""

    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, hidden)  # weight [hidden, d]
        self.drop = torch.nn.Dropout(dropout)
        self.fc2 = torch.nn.Linear(hidden, 1)  # weight [1, hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [n, d] -> [n]
        return self.fc2(self.drop(torch.relu(self.fc1(x)))).squeeze(-1)


class MLPProbe(ClassifierMixin, BaseEstimator):
    """Two-layer MLP probe ``d -> hidden -> 1`` with early stopping.

    Args:
        hidden: Width of the hidden layer.
        dropout: Dropout probability after the ReLU (training only).
        weight_decay: Decoupled weight decay of AdamW.
        lr: AdamW learning rate.
        max_epochs: Upper bound on training epochs.
        batch_size: Mini-batch size.
        patience: Stop after this many epochs without a validation log-loss improvement (a drop of more than
            ``1e-4`` relative to the best so far); the weights of the best epoch are restored.
        val_fraction: Share of the training rows held out for early stopping when ``fit`` gets no
            validation data (stratified, drawn from ``seed``; not grouped by image, so prefer passing a grouped
            ``X_val``/``y_val``).
        standardize: Standardize features with the training mean/std (zero-variance features keep scale 1).
        seed: Seed of every random draw in ``fit``.
        device: Torch device for training and inference ("cpu", "cuda", "cuda:1", ...).

    Fitted attributes: ``n_features_in_``, ``classes_``, ``mean_``/``scale_`` (float32 [d] or None), ``net_``,
    ``n_epochs_`` (epochs run), ``best_epoch_`` (1-based), ``best_val_loss_``, ``stopped_early_``,
    ``train_loss_curve_``/``val_loss_curve_`` (one value per epoch).
    """

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.1,
        weight_decay: float = 1e-4,
        lr: float = 1e-3,
        max_epochs: int = 200,
        batch_size: int = 256,
        patience: int = 10,
        val_fraction: float = 0.1,
        standardize: bool = True,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.seed = seed
        self.device = device

    def _check_params(self) -> None:
        for name in ("hidden", "max_epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def _transform(self, X: np.ndarray) -> np.ndarray:  # [n, d] float32 -> [n, d] float32
        if self.mean_ is None:
            return X
        return (X - self.mean_) / self.scale_

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> MLPProbe:
        """Train on ``X`` [n, d] / ``y`` [n] (binary), early-stopping on ``(X_val, y_val)`` or an internal split.

        Returns:
            self.
        """
        self._check_params()
        X = _as_float32(X, "X")
        y = _as_binary(y, X.shape[0], "y")
        if len(np.unique(y)) < 2:
            raise ValueError("y contains a single class; a probe needs both correct and incorrect items")
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if X_val is None:
            counts = np.bincount(y.astype(np.int64), minlength=2)
            strat = y if counts.min() >= 2 else None
            X, X_val, y, y_val = train_test_split(
                X, y, test_size=self.val_fraction, random_state=self.seed, stratify=strat
            )
        else:
            X_val = _as_float32(X_val, "X_val")
            y_val = _as_binary(y_val, X_val.shape[0], "y_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features, X has {X.shape[1]}")
        d = X.shape[1]
        self.n_features_in_ = d
        self.classes_ = np.array([0, 1])
        if self.standardize:
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            self.mean_ = mean.astype(np.float32)  # [d]
            self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)  # [d]
        else:
            self.mean_ = self.scale_ = None

        dev = torch.device(self.device)
        fork_devices = (
            [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)  # CPU generator for the mini-batch order
            self._train(X, y, X_val, y_val, dev, gen)
        return self

    def _train(self, X, y, X_val, y_val, dev: torch.device, gen: torch.Generator) -> None:
        xt = torch.from_numpy(self._transform(X)).to(dev)  # [n, d]
        yt = torch.from_numpy(y).to(dev)  # [n]
        xv = torch.from_numpy(self._transform(X_val)).to(dev)  # [n_val, d]
        yv = torch.from_numpy(y_val).to(dev)  # [n_val]
        net = _Net(X.shape[1], int(self.hidden), float(self.dropout)).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        n, bs = xt.shape[0], int(self.batch_size)
        best, best_state, best_epoch, bad = np.inf, copy.deepcopy(net.state_dict()), 0, 0
        train_curve: list[float] = []
        val_curve: list[float] = []
        for epoch in range(1, int(self.max_epochs) + 1):
            net.train()
            order = torch.randperm(n, generator=gen).to(dev)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel()
            train_curve.append(total / n)
            net.eval()
            with torch.no_grad():
                val = float(loss_fn(net(xv), yv))
            val_curve.append(val)
            if val < best - _MIN_IMPROVEMENT * abs(best if np.isfinite(best) else 0.0):
                best, best_epoch, bad = val, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad += 1
                if bad >= int(self.patience):
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.n_epochs_ = len(val_curve)
        self.best_epoch_ = best_epoch
        self.best_val_loss_ = float(best)
        self.stopped_early_ = self.n_epochs_ < int(self.max_epochs)
        self.train_loss_curve_ = train_curve
        self.val_loss_curve_ = val_curve

    def decision_function(self, X: Any) -> np.ndarray:
        """Logit of P(correct) for ``X`` [n, d]; returns float64 [n] (computed in float32)."""
        check_is_fitted(self, "net_")
        X = _as_float32(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        Z = self._transform(X)
        dev = next(self.net_.parameters()).device
        out = np.empty(X.shape[0], dtype=np.float64)  # [n]
        with torch.no_grad():
            for start in range(0, X.shape[0], _PREDICT_BATCH):
                chunk = torch.from_numpy(Z[start : start + _PREDICT_BATCH]).to(dev)
                out[start : start + _PREDICT_BATCH] = self.net_(chunk).cpu().numpy()
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities for ``X`` [n, d]: float64 [n, 2], columns P(incorrect), P(correct) (``classes_``).

        Column 1 is ``expit(decision_function(X))``; column 0 is one minus it.
        """
        p1 = expit(self.decision_function(X))
        return proba_columns(p1)

    def predict(self, X: Any) -> np.ndarray:
        """Hard labels (int64 [n]): 1 where the logit is positive."""
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Float32 weight arrays (safetensors-ready) and a JSON-serializable dict of parameters and fit info."""
        check_is_fitted(self, "net_")
        sd = self.net_.state_dict()
        tensors = {
            "fc1.weight": sd["fc1.weight"].detach().cpu().numpy().astype(np.float32),  # [hidden, d]
            "fc1.bias": sd["fc1.bias"].detach().cpu().numpy().astype(np.float32),  # [hidden]
            "fc2.weight": sd["fc2.weight"].detach().cpu().numpy().astype(np.float32),  # [1, hidden]
            "fc2.bias": sd["fc2.bias"].detach().cpu().numpy().astype(np.float32),  # [1]
        }
        if self.mean_ is not None:
            tensors["mean"] = self.mean_  # [d]
            tensors["scale"] = self.scale_  # [d]
        fitted = {
            "n_features_in": int(self.n_features_in_),
            "n_epochs": int(self.n_epochs_),
            "best_epoch": int(self.best_epoch_),
            "best_val_loss": float(self.best_val_loss_),
            "stopped_early": bool(self.stopped_early_),
            "train_loss_curve": [float(v) for v in self.train_loss_curve_],
            "val_loss_curve": [float(v) for v in self.val_loss_curve_],
        }
        return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, {"params": self.get_params(), "fitted": fitted}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict, device: str | None = None) -> MLPProbe:
        """Rebuild a fitted probe from :meth:`get_state` output; predictions are identical.

        Args:
            tensors: The arrays of :meth:`get_state`.
            meta: The dict of :meth:`get_state`.
            device: Override the saved ``device`` (e.g. "cpu" to re-analyze a GPU-trained probe without a GPU).
        """
        params = dict(meta["params"])
        if device is not None:
            params["device"] = device
        probe = cls(**params)
        fitted = meta["fitted"]
        d = int(fitted["n_features_in"])
        w1 = np.asarray(tensors["fc1.weight"], dtype=np.float32)
        if w1.shape != (int(probe.hidden), d):
            raise ValueError(f"fc1.weight has shape {w1.shape}, expected {(probe.hidden, d)}")
        net = _Net(d, int(probe.hidden), float(probe.dropout))
        net.load_state_dict({k: torch.from_numpy(np.array(tensors[k], dtype=np.float32)) for k in net.state_dict()})
        net.to(torch.device(probe.device)).eval()
        probe.net_ = net
        probe.n_features_in_ = d
        probe.classes_ = np.array([0, 1])
        has_mean = "mean" in tensors
        if has_mean != bool(probe.standardize):
            raise ValueError(f"state has standardization arrays={has_mean} but standardize={probe.standardize}")
        probe.mean_ = np.array(tensors["mean"], dtype=np.float32) if has_mean else None
        probe.scale_ = np.array(tensors["scale"], dtype=np.float32) if has_mean else None
        probe.n_epochs_ = int(fitted["n_epochs"])
        probe.best_epoch_ = int(fitted["best_epoch"])
        probe.best_val_loss_ = float(fitted["best_val_loss"])
        probe.stopped_early_ = bool(fitted["stopped_early"])
        probe.train_loss_curve_ = list(fitted["train_loss_curve"])
        probe.val_loss_curve_ = list(fitted["val_loss_curve"])
        return probe
