"""Attention-feature ensemble: the supervised stress test that gives attention every chance (SPEC section 6).

:class:`TreeEnsembleProbe` fits scikit-learn's ``GradientBoostingClassifier`` (``kind="gbt"``) or
``RandomForestClassifier`` (``kind="rf"``) on per-layer attention summaries plus their interactions, then
exports every tree into flat arrays and predicts with its own vectorized traversal of those arrays, so a
reloaded probe (:meth:`TreeEnsembleProbe.from_state`, no pickle, no scikit-learn object) predicts exactly
what the fitted one does; tests keep scikit-learn's ``predict_proba(X)[:, 1]`` as the oracle.

Input layout (layer-major): ``X`` is [n, L * T]; column ``l * T + t`` is feature type ``t`` of layer ``l``. The
default ``T = 3`` types are, in order, spatial entropy, fragmentation (secondary components) and peakiness,
but any ``T`` types in a fixed order work.

Interaction features (``interactions=True``, see :func:`interaction_features`), appended after the base
columns, in this order:

1. within-layer products of every pair of types, ``x[l, a] * x[l, b]`` for ``a < b``: ``L * T(T-1)/2`` columns
   (layer-major, pairs in lexicographic order);
2. the cross-layer mean of each type, ``m[t] = mean_l x[l, t]``: ``T`` columns;
3. every base feature times every type mean, ``x[l, t] * m[s]``: ``L * T * T`` columns (order ``l, t, s``).

For 32 layers x 3 types that is 96 + 96 + 3 + 288 = 483 columns instead of the 4560 of all pairs; trees
already model cross-layer interactions through successive splits, so the products only add the within-layer
and layer-vs-overall terms that single splits express poorly.

Missing values are rejected (``ValueError``): impute before fitting. scikit-learn's trees compare the input
cast to float32 with float64 thresholds, going left when ``x <= threshold``; the exported predictor does the same.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from vrp.probes._common import proba_columns

_CHUNK_CELLS = 1 << 21  # trees x samples traversed at once


def _check_matrix(X: Any, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 [n, f] array, or raise a ValueError naming the problem."""
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {a.shape}")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        rows, cols = np.nonzero(np.isnan(a))
        raise ValueError(
            f"{name} contains NaN ({rows.size} cells, e.g. row {rows[0]} column {cols[0]}); the tree probe does not "
            "route missing values: impute (e.g. with the training median) or drop those items first"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains infinite values; clip or drop them first")
    return a


def interaction_features(X: Any, n_types: int = 3) -> np.ndarray:
    """Append the interaction columns documented in the module docstring to layer-major ``X`` [n, L * T].

    Returns:
        float64 [n, L*T + L*T*(T-1)/2 + T + L*T*T].
    """
    X = _check_matrix(X)
    n, f = X.shape
    if n_types < 1 or f % n_types:
        raise ValueError(f"{f} features cannot be split into layers of n_types={n_types} (layer-major layout)")
    X3 = X.reshape(n, f // n_types, n_types)  # [n, L, T]
    pairs = list(combinations(range(n_types), 2))
    within = [X3[:, :, a] * X3[:, :, b] for a, b in pairs]  # each [n, L]
    within_cols = np.stack(within, axis=2).reshape(n, -1) if pairs else np.empty((n, 0))  # [n, L * P]
    means = X3.mean(axis=1)  # [n, T]
    cross = (X3[:, :, :, None] * means[:, None, None, :]).reshape(n, -1)  # [n, L * T * T], order (l, t, s)
    return np.concatenate([X, within_cols, means, cross], axis=1)


def interaction_feature_names(names: list[str], n_types: int = 3) -> list[str]:
    """Names of the columns of :func:`interaction_features` given the base column ``names`` (layer-major)."""
    f = len(names)
    if n_types < 1 or f % n_types:
        raise ValueError(f"{f} feature names cannot be split into layers of n_types={n_types}")
    n_layers = f // n_types
    grid = [[names[l * n_types + t] for t in range(n_types)] for l in range(n_layers)]
    pairs = list(combinations(range(n_types), 2))
    out = list(names)
    out += [f"{grid[l][a]}*{grid[l][b]}" for l in range(n_layers) for a, b in pairs]
    means = [f"layer_mean_t{t}" for t in range(n_types)]
    out += means
    out += [f"{grid[l][t]}*{means[s]}" for l in range(n_layers) for t in range(n_types) for s in range(n_types)]
    return out


def _export_trees(trees: list, leaf_column: int | None) -> dict[str, np.ndarray]:
    """Concatenate sklearn ``tree_`` objects into flat arrays with global node indices.

    ``leaf_column`` is ``None`` for regression trees (value [nodes, 1, 1]) and the class index for
    classification trees (value [nodes, 1, n_classes] holding class fractions).
    """
    left, right, feature, threshold, value, offsets = [], [], [], [], [], [0]
    for tree in trees:
        t = tree.tree_
        off = offsets[-1]
        leaf = t.children_left < 0
        left.append(np.where(leaf, -1, t.children_left + off))
        right.append(np.where(leaf, -1, t.children_right + off))
        feature.append(np.where(leaf, 0, t.feature))
        threshold.append(np.asarray(t.threshold, dtype=np.float64))
        value.append(t.value[:, 0, 0] if leaf_column is None else t.value[:, 0, leaf_column])
        offsets.append(off + t.node_count)
    return {
        "children_left": np.concatenate(left).astype(np.int64),  # [N] global index, -1 at leaves
        "children_right": np.concatenate(right).astype(np.int64),  # [N]
        "feature": np.concatenate(feature).astype(np.int64),  # [N] 0 at leaves (unused)
        "threshold": np.concatenate(threshold),  # [N] float64, go left when x <= threshold
        "leaf_value": np.concatenate(value).astype(np.float64),  # [N] used at leaves only
        "tree_offsets": np.asarray(offsets, dtype=np.int64),  # [T + 1] root of tree i = tree_offsets[i]
    }


def _traverse(arrays: dict[str, np.ndarray], X32: np.ndarray, depth: int) -> np.ndarray:
    """Leaf values of every tree for every row of float32 ``X32`` [m, f]; returns float64 [n_trees, m]."""
    left, right = arrays["children_left"], arrays["children_right"]
    feature, threshold = arrays["feature"], arrays["threshold"]
    roots = arrays["tree_offsets"][:-1]  # [T]
    m = X32.shape[0]
    node = np.repeat(roots[:, None], m, axis=1)  # [T, m]
    rows = np.arange(m)[None, :]  # [1, m]
    for _ in range(depth):
        go_left = X32[rows, feature[node]] <= threshold[node]  # float32 -> float64 comparison, as in sklearn
        node = np.where(left[node] < 0, node, np.where(go_left, left[node], right[node]))
    if (left[node] >= 0).any():
        raise ValueError(f"tree traversal did not reach a leaf in {depth} steps: corrupted tree arrays")
    return arrays["leaf_value"][node]


class TreeEnsembleProbe(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees or a random forest on per-layer attention features and their interactions.

    Args:
        kind: "gbt" (``GradientBoostingClassifier``, log-loss) or "rf" (``RandomForestClassifier``).
        n_estimators: Number of trees (boosting stages for "gbt").
        max_depth: Tree depth; "auto" means 3 for "gbt" and None (grow until pure / ``min_samples_leaf``) for "rf".
        learning_rate: Shrinkage of each boosting stage ("gbt" only).
        min_samples_leaf: Minimum training rows per leaf.
        interactions: Append the interaction columns of :func:`interaction_features`.
        n_types: Feature types per layer ``T`` in the layer-major input (used by ``interactions``).
        feature_names: Optional names of the ``L * T`` input columns, for ``feature_names_out_``.
        seed: ``random_state`` of the scikit-learn estimator.

    Fitted attributes: ``n_features_in_``, ``classes_``, ``feature_names_out_`` (names of the expanded columns),
    ``feature_importances_`` (float64 [n_expanded], impurity-based, from scikit-learn), ``trees_`` (the exported
    arrays used for prediction), ``init_raw_`` (GBT prior log-odds; 0.0 for "rf"), ``max_tree_depth_``,
    ``estimator_`` (the scikit-learn model; None after :meth:`from_state`).
    """

    def __init__(
        self,
        kind: str = "gbt",
        n_estimators: int = 200,
        max_depth: int | str | None = "auto",
        learning_rate: float = 0.05,
        min_samples_leaf: int = 5,
        interactions: bool = True,
        n_types: int = 3,
        feature_names: list[str] | None = None,
        seed: int = 0,
    ):
        self.kind = kind
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_samples_leaf = min_samples_leaf
        self.interactions = interactions
        self.n_types = n_types
        self.feature_names = feature_names
        self.seed = seed

    def _resolved_depth(self) -> int | None:
        if self.max_depth == "auto":
            return 3 if self.kind == "gbt" else None
        if isinstance(self.max_depth, str):
            raise ValueError(f"max_depth must be an int, None or 'auto', got {self.max_depth!r}")
        return self.max_depth

    def transform(self, X: Any) -> np.ndarray:
        """The matrix the trees see: ``X`` [n, L*T] (checked, float64) plus interaction columns if enabled."""
        X = _check_matrix(X)
        n_in = getattr(self, "n_features_in_", None)
        if n_in is not None and X.shape[1] != n_in:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fitted on {n_in}")
        return interaction_features(X, self.n_types) if self.interactions else X

    def fit(self, X: Any, y: Any) -> TreeEnsembleProbe:
        """Fit on attention features ``X`` [n, L*T] (layer-major) and binary labels ``y`` [n].

        Returns:
            self.
        """
        if self.kind not in ("gbt", "rf"):
            raise ValueError(f"kind must be 'gbt' or 'rf', got {self.kind!r}")
        X = _check_matrix(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with {X.shape[0]} entries, got shape {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"y must be binary 0/1 (or bool); got values {np.unique(y)[:10]}")
        y = y.astype(np.int64)
        if len(np.unique(y)) < 2:
            raise ValueError("y contains a single class; a probe needs both correct and incorrect items")
        names = list(self.feature_names) if self.feature_names is not None else None
        if names is not None and len(names) != X.shape[1]:
            raise ValueError(f"feature_names has {len(names)} entries, X has {X.shape[1]} columns")
        names = names or [f"x{i}" for i in range(X.shape[1])]
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_  # refit: transform() must not check against the previous fit
        Z = self.transform(X)  # [n, n_expanded]
        common = dict(n_estimators=self.n_estimators, max_depth=self._resolved_depth(), random_state=self.seed)
        common["min_samples_leaf"] = self.min_samples_leaf
        if self.kind == "gbt":
            est = GradientBoostingClassifier(learning_rate=self.learning_rate, **common).fit(Z, y)
            trees = list(est.estimators_[:, 0])
            prior = est.init_.predict_proba(Z[:1])[0, 1]  # the DummyClassifier prior, as in sklearn
            eps = np.finfo(np.float64).eps
            self.init_raw_ = float(logit(np.clip(prior, eps, 1 - eps)))
            self.trees_ = _export_trees(trees, leaf_column=None)
        else:
            est = RandomForestClassifier(**common).fit(Z, y)
            trees = list(est.estimators_)
            self.init_raw_ = 0.0
            self.trees_ = _export_trees(trees, leaf_column=int(np.flatnonzero(est.classes_ == 1)[0]))
        self.estimator_ = est
        self.max_tree_depth_ = max(int(t.tree_.max_depth) for t in trees)
        self.feature_importances_ = np.asarray(est.feature_importances_, dtype=np.float64)
        self.feature_names_out_ = interaction_feature_names(names, self.n_types) if self.interactions else names
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def _scores(self, X: Any) -> np.ndarray:
        """float64 [n] for ``X`` [n, L*T] from the exported tree arrays: the raw log-odds ("gbt") or P(correct) ("rf")."""
        check_is_fitted(self, "trees_")
        Z32 = np.ascontiguousarray(self.transform(X), dtype=np.float32)  # sklearn trees see float32 inputs
        n_trees = self.trees_["tree_offsets"].shape[0] - 1
        chunk = max(1, _CHUNK_CELLS // max(n_trees, 1))
        out = np.empty(Z32.shape[0], dtype=np.float64)  # [n]
        for start in range(0, Z32.shape[0], chunk):
            vals = _traverse(self.trees_, Z32[start : start + chunk], self.max_tree_depth_)  # [n_trees, m]
            if self.kind == "gbt":  # sequential sums in sklearn's order: raw = init + lr * v_1 + lr * v_2 ...
                raw = np.full(vals.shape[1], self.init_raw_, dtype=np.float64)
                for v in vals:
                    raw += self.learning_rate * v
                out[start : start + chunk] = raw
            else:  # mean of per-tree class-1 fractions, summed in tree order then divided
                acc = np.zeros(vals.shape[1], dtype=np.float64)
                for v in vals:
                    acc += v
                acc /= n_trees
                out[start : start + chunk] = acc
        return out

    @available_if(lambda self: self.kind == "gbt")
    def decision_function(self, X: Any) -> np.ndarray:
        """Raw log-odds of P(correct), float64 [n], for ``X`` [n, L*T] ("gbt" only, as in scikit-learn).

        Equals the scikit-learn estimator's ``decision_function(self.transform(X))``. A random forest has
        no decision function (scikit-learn's has none either): the attribute is absent for ``kind="rf"``.
        """
        return self._scores(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities for ``X`` [n, L*T]: float64 [n, 2], columns P(incorrect), P(correct) (``classes_``).

        Column 1 equals the scikit-learn estimator's ``predict_proba(self.transform(X))[:, 1]``; column 0 is
        one minus it.
        """
        s = self._scores(X)
        p1 = expit(s) if self.kind == "gbt" else s
        return proba_columns(p1)

    def predict(self, X: Any) -> np.ndarray:
        """Hard labels (int64 [n]): 1 where P(correct) > 0.5."""
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(np.int64)]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Flat tree arrays (safetensors-ready) and a JSON-serializable dict; see :func:`_export_trees`."""
        check_is_fitted(self, "trees_")
        tensors = {k: np.ascontiguousarray(v) for k, v in self.trees_.items()}
        tensors["init_raw"] = np.array([self.init_raw_], dtype=np.float64)  # [1]
        tensors["feature_importances"] = np.ascontiguousarray(self.feature_importances_)  # [n_expanded]
        params = self.get_params()
        if params["feature_names"] is not None:
            params["feature_names"] = [str(v) for v in params["feature_names"]]
        fitted = {
            "n_features_in": int(self.n_features_in_),
            "max_tree_depth": int(self.max_tree_depth_),
            "feature_names_out": [str(v) for v in self.feature_names_out_],
        }
        return tensors, {"params": params, "fitted": fitted}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> TreeEnsembleProbe:
        """Rebuild a fitted probe (no scikit-learn model) whose predictions equal the saved one's."""
        probe = cls(**meta["params"])
        fitted = meta["fitted"]
        keys = ("children_left", "children_right", "feature", "threshold", "leaf_value", "tree_offsets")
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise ValueError(f"tree state lacks arrays {missing}")
        probe.trees_ = {k: np.asarray(tensors[k]) for k in keys}
        n_nodes = probe.trees_["children_left"].shape[0]
        if probe.trees_["tree_offsets"][-1] != n_nodes:
            raise ValueError(f"tree_offsets ends at {probe.trees_['tree_offsets'][-1]}, arrays hold {n_nodes} nodes")
        probe.init_raw_ = float(np.asarray(tensors["init_raw"])[0])
        probe.feature_importances_ = np.asarray(tensors["feature_importances"], dtype=np.float64)
        probe.max_tree_depth_ = int(fitted["max_tree_depth"])
        probe.feature_names_out_ = list(fitted["feature_names_out"])
        probe.n_features_in_ = int(fitted["n_features_in"])
        probe.classes_ = np.array([0, 1])
        probe.estimator_ = None
        return probe
