"""Attention heads as predictors (part of ``vrp probe``): heads ranked by direct logit
attribution, the structural signals of the top-ranked heads, and a probe on every head.

Reads the per-head curves ``vrp run`` stores (``curve.head_contrib`` and
``curve.head_attn_*``, each ``[n, L, H]``) and the probes' split; writes under
``RUN_DIR/probes/``:

    heads.json              every attention head ranked by mean |direct logit contribution| on the
                            TRAIN split only: [{block, head, mean_abs_contrib}], best first
    head_signals.parquet    id + the derived signals ``attn_<feature>_dla<k>``: the mean of a
                            per-head feature over the top-k ranked heads (k = 1, 4, 16, capped at
                            the number of heads), the paper's "attention features of the top-k
                            heads by direct logit contribution" robustness check
    attn_heads/             the per-head attention probe (``attn_heads_probe``): a logistic probe
                            (C chosen on validation) or gradient-boosted trees, whichever has the
                            higher validation AUROC, on every (block, head)'s features

The feature of a set of heads is the mean of the heads' own features (the entropy of each
head's map, averaged), not the feature of their averaged map: the run stores per-head features,
not per-head maps, for every item.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from vrp.runs import storage
from vrp.signals.catalog import DERIVED

log = logging.getLogger(__name__)
HEAD_FEATURES = ("entropy", "peakiness", "secondary", "image_mass", "region_mass")
# the per-head probes: name -> (folder under probes/, features). The first reads no gold region (a
# deployable, gold-free attention summary: the study's "best attention" may choose it); the second
# adds each head's mass on the gold region where the item has one (attention at its most generous)
HEAD_PROBES = {
    "attn_heads_probe": ("attn_heads", HEAD_FEATURES[:4]),
    "attn_heads_probe_gold": ("attn_heads_gold", HEAD_FEATURES),
}
TOP_K = (1, 4, 16)
SOURCE = "probes/head_signals.parquet"


def _load(run_dir: Path, ids: list[str], name: str) -> np.ndarray:
    """``curve.<name>`` ``[n, L, H]`` float64 in the order of ``ids``."""
    c_ids, arr = storage.load_stacked(run_dir, f"curve.{name}")
    pos = {i: k for k, i in enumerate(c_ids)}
    return arr[[pos[i] for i in ids]].astype(np.float64)


def rank_heads(contrib: np.ndarray, train: np.ndarray) -> list[tuple[int, int, float]]:
    """Heads by mean |contribution| over the train items, largest first. A head that is NaN for
    every train item (no attention, no gold answer) or contributes exactly 0 (its output
    projection zeroed) is not ranked.

    Args:
        contrib: ``[n, L, H]`` direct logit contributions.
        train: indices of the train items.

    Returns:
        ``[(block, head, mean_abs)]``, ties broken by (block, head).
    """
    a = np.abs(contrib[train])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a head with no finite value: NaN, not ranked
        score = np.nanmean(np.where(np.isfinite(a), a, np.nan), axis=0) if len(a) else np.full(a.shape[1:], np.nan)
    cells = [(int(b), int(h), float(score[b, h])) for b in range(score.shape[0]) for h in range(score.shape[1])
             if np.isfinite(score[b, h]) and score[b, h] > 0]  # fmt: skip
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))


def top_k_signals(features: dict[str, np.ndarray], ranking: list[tuple[int, int, float]]) -> dict[str, np.ndarray]:
    """``attn_<feature>_dla<k>`` per item: the mean of each per-head feature ``[n, L, H]`` over the
    top-k ranked heads (NaN where every one of them is NaN)."""
    out = {}
    for k in TOP_K:
        top = ranking[: min(k, len(ranking))]
        if not top:
            continue
        b, h = np.array([c[0] for c in top]), np.array([c[1] for c in top])
        for name, f in features.items():
            vals = f[:, b, h]  # [n, k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an item with all k heads NaN: NaN
                out[f"attn_{name}_dla{k}"] = np.nanmean(vals, axis=1)
    return out


def head_features(run_dir: Path, ids: list[str]) -> dict[str, np.ndarray] | None:
    """The stored per-head features ``{name: [n, L, H]}``, or None for a run stored before them."""
    try:
        return {name: _load(run_dir, ids, f"head_attn_{name}") for name in HEAD_FEATURES}
    except KeyError:
        return None


def head_probes(run_dir: Path, data: dict, split, cfg, out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Rank heads, write the top-k signals and train the per-head attention probe.

    Args:
        run_dir: the run directory.
        data: :func:`vrp.analysis.probing.load_probe_data`'s dict (``ids``, ``y``).
        split: the probes' :class:`vrp.probes.split.Split`.
        cfg: the :class:`ProbeConfig`.
        out: ``RUN_DIR/probes``.

    Returns:
        (summary entries by probe name, predictions by probe name); empty for a run that stored no
        per-head curves (logged).
    """
    import pandas as pd
    import pyarrow as pa

    from vrp.probes.io import save_probe
    from vrp.runs.rundir import atomic_write_json, write_table

    ids, y = data["ids"], data["y"]
    feats = head_features(run_dir, ids)
    if feats is None:
        log.info("%s stores no per-head curves (a run made before them): no head ranking or head probe", run_dir)
        return {}, {}
    try:
        contrib = _load(run_dir, ids, "head_contrib")
    except KeyError:
        contrib = None
    if contrib is not None and np.isfinite(contrib[split.train]).any():
        ranking = rank_heads(contrib, split.train)
        atomic_write_json(out / "heads.json", {
            "ranked_on": "train", "score": "mean |direct logit contribution| at the decision position",
            "heads": [{"block": b, "head": h, "mean_abs_contrib": s} for b, h, s in ranking],
        })  # fmt: skip
        signals = top_k_signals(feats, ranking)
        names = [d.name for d in DERIVED if d.source == SOURCE and d.name in signals]
        write_table(out.parent / SOURCE, pa.Table.from_pandas(
            pd.DataFrame({"id": ids, **{n: signals[n] for n in names}}), preserve_index=False))  # fmt: skip
    else:
        log.info("%s: no direct logit contributions (no gold answers or a run made before them): no ranking", run_dir)
    entries, preds = {}, {}
    for name, (folder, features) in HEAD_PROBES.items():
        if name == "attn_heads_probe_gold" and not np.isfinite(feats["region_mass"]).any():
            log.info("%s has no gold regions: no gold-region per-head probe", run_dir)
            continue
        try:
            entry, p = _head_probe({f: feats[f] for f in features}, y, split, cfg)
        except ValueError as e:  # e.g. every feature constant on the train split: the other probes go on
            log.warning("%s: no %s: %s", run_dir, name, e)
            continue
        save_probe(entry.pop("model"), out / folder)
        entries[name], preds[name] = {**entry, "features": list(features)}, p
    return entries, preds


def _head_probe(feats: dict[str, np.ndarray], y: np.ndarray, split, cfg) -> tuple[dict, np.ndarray]:
    from vrp.probes.linear import sweep
    from vrp.probes.trees import TreeEnsembleProbe
    from vrp.stats.auroc import auroc

    X = np.stack([np.nan_to_num(f, nan=0.0) for f in feats.values()], axis=3)  # [n, L, H, F]
    X = X.reshape(len(y), -1)  # one feature per (block, head, feature)
    tr, va, te = split.train, split.val, split.test
    res = sweep(X[tr, None, :], y[tr], X[va, None, :], y[va], penalty="l2", Cs=cfg.cs, seed=cfg.seed,
                max_iter=cfg.max_iter)  # fmt: skip
    logit_val = float(res.best_val_auroc[0])
    gbt = TreeEnsembleProbe(kind="gbt", n_estimators=cfg.trees, seed=cfg.seed, interactions=False).fit(X[tr], y[tr])
    gbt_val = float(auroc(gbt.predict_proba(X[va])[:, 1], y[va]))
    if np.isnan(logit_val) or gbt_val > logit_val:
        model, kind, p = gbt, "gbt", gbt.predict_proba(X)[:, 1]
    else:
        model, kind, p = res.model, "logistic", res.model.predict_proba_layers(X[:, None, :])[:, 0]
        model.set_params(layer=0)
    entry = {
        "kind": kind, "val_auroc_logistic": logit_val, "val_auroc_gbt": gbt_val,
        "C": float(res.best_C[0]) if kind == "logistic" else None, "n_features": int(X.shape[1]),
        "val_auroc": float(auroc(p[va], y[va])), "test_auroc": float(auroc(p[te], y[te])), "model": model,
    }  # fmt: skip
    return entry, p
