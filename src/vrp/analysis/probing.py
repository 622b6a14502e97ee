"""``vrp probe``: train every reliability probe of SPEC §6 on a stored run.

Reads ``items.parquet`` (labels, image = group) and the shards (decision-position
residuals, per-layer attention curves); never touches a model. Writes ``RUN_DIR/probes/``:

    split.json             item ids of train / validation / test (grouped by image, stratified)
    summary.json           per probe: chosen layer and hyper-parameters (on validation only),
                           validation and test AUROC; per-layer validation and test AUROC
    predictions.parquet    id, split, and each probe's p(correct) for every item
    <probe>/probe.safetensors + probe.json   each trained probe (no pickle)

Protocol: the split is made once (seeded); every choice (the probe layer, C, the MLP's
early stopping, the tree ensemble kind) is made on validation; test predictions are
written once and only read by ``vrp analyze``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.analysis.config import ProbeConfig
from vrp.runs import storage
from vrp.runs.rundir import atomic_write_json, write_table

log = logging.getLogger(__name__)
ATTN_FEATURES = ("attn_entropy", "attn_secondary", "attn_peakiness")


def _auroc(scores: np.ndarray, y: np.ndarray) -> float:
    from vrp.stats.auroc import auroc

    return float(auroc(scores, y))


def load_probe_data(run_dir: Path) -> dict:
    """Labels, groups, residuals ``[n, layers, d]`` and attention features, aligned by item id."""
    table = pq.read_table(run_dir / "items.parquet", columns=["id", "image", "correct", "task"])
    ids = table.column("id").to_pylist()
    pos = {i: k for k, i in enumerate(ids)}
    r_ids, resid = storage.load_stacked(run_dir, "residual")  # [n, 1 + S, d] float16
    order = np.array([pos[i] for i in r_ids])
    if len(order) != len(ids) or not np.array_equal(np.sort(order), np.arange(len(ids))):
        raise ValueError(f"{run_dir}: the shards' residuals and items.parquet hold different items")
    resid = resid[np.argsort(order)]
    feats = []
    for name in ATTN_FEATURES:
        f_ids, curve = storage.load_stacked(run_dir, f"curve.{name}")  # [n, L]
        feats.append(curve[np.argsort(np.array([pos[i] for i in f_ids]))])
    meta = _shard_meta(run_dir)
    return {
        "ids": ids,
        "y": np.asarray(table.column("correct").to_pylist(), dtype=np.int64),
        "groups": np.asarray(table.column("image").to_pylist()),
        "X": resid,
        "residual_layers": [0] + [i + 1 for i in meta["stored_layers"]],
        "attn": np.stack(feats, axis=2).astype(np.float64),  # [n, L, 3]
    }


def _shard_meta(run_dir: Path) -> dict:
    from safetensors import safe_open

    first = next(iter(storage.completed(run_dir).values()))
    with safe_open(str(first.with_suffix(".safetensors")), framework="np") as f:
        return json.loads(f.metadata()["meta"])


def train_probes(run_dir: Path, cfg: ProbeConfig | None = None) -> dict:
    """Train every probe on the run in ``run_dir``; returns the summary written to ``probes/summary.json``."""
    from vrp.probes.io import save_probe
    from vrp.probes.linear import nan_argmax, sweep, sweep_stacked
    from vrp.probes.mlp import MLPProbe
    from vrp.probes.split import grouped_stratified_split
    from vrp.probes.trees import TreeEnsembleProbe

    cfg = cfg or ProbeConfig()
    run_dir = Path(run_dir)
    data = load_probe_data(run_dir)
    X, y, n = data["X"], data["y"], len(data["y"])
    split = grouped_stratified_split(y, data["groups"], fractions=cfg.fractions, seed=cfg.seed)
    tr, va, te = split.train, split.val, split.test
    out = run_dir / "probes"
    out.mkdir(exist_ok=True)
    preds: dict[str, np.ndarray] = {}
    summary: dict = {"config": {**cfg.__dict__}, "n": n, "split_sizes": [len(tr), len(va), len(te)],
                     "residual_layers": data["residual_layers"], "probes": {}}  # fmt: skip

    for penalty, name in (("l2", "dense"), ("l1", "sparse")):
        res = sweep(X[tr], y[tr], X[va], y[va], penalty=penalty, Cs=cfg.cs, seed=cfg.seed, max_iter=cfg.max_iter)
        val_best = res.best_val_auroc  # [L]; NaN where undefined (a layer that is the same for every item)
        if np.isnan(val_best).all():
            raise ValueError("every layer's probe is undefined on validation (constant activations)")
        layer = int(nan_argmax(val_best))
        proba = res.model.predict_proba_layers(X)  # [n, L]
        test_by_layer = [_auroc(proba[te, k], y[te]) for k in range(proba.shape[1])]
        preds[f"probe_{name}"] = proba[:, layer]
        res.model.set_params(layer=layer)  # the saved probe's predict_proba(X)[:, 1] is preds[f"probe_{name}"]
        save_probe(res.model, out / f"probe_{name}")
        entry = {
            "layer_index": layer, "residual_layer": data["residual_layers"][layer],
            "C": float(res.best_C[layer]), "val_auroc": float(val_best[layer]),
            "test_auroc": test_by_layer[layer],
            "val_auroc_by_layer": val_best.tolist(), "test_auroc_by_layer": test_by_layer,
            "best_C_by_layer": np.asarray(res.best_C).tolist(),
        }  # fmt: skip
        if penalty == "l1":
            entry["nonzero_units"] = np.flatnonzero(res.model.coef_[layer]).tolist()
        summary["probes"][f"probe_{name}"] = entry
    best = summary["probes"]["probe_dense"]["layer_index"]

    k = min(cfg.stacked_k, X.shape[1])
    stacked = sweep_stacked(
        X[tr], y[tr], X[va], y[va], k=k, penalty="l2", Cs=cfg.cs, seed=cfg.seed, max_iter=cfg.max_iter
    ).model
    preds["probe_stacked"] = stacked.predict_proba(X)[:, 1]
    save_probe(stacked, out / "probe_stacked")
    summary["probes"]["probe_stacked"] = _entry(preds["probe_stacked"], y, va, te, k=k, C=stacked.C)

    mlp = MLPProbe(hidden=cfg.mlp_hidden, seed=cfg.seed).fit(X[tr, best], y[tr], X[va, best], y[va])
    preds["probe_mlp"] = mlp.predict_proba(X[:, best])[:, 1]
    save_probe(mlp, out / "probe_mlp")
    summary["probes"]["probe_mlp"] = _entry(preds["probe_mlp"], y, va, te, layer_index=best)

    feats = data["attn"].reshape(n, -1)  # [n, L * 3], layer-major
    names = [f"{f}@{layer}" for layer in range(data["attn"].shape[1]) for f in ATTN_FEATURES]
    ensembles = {
        kind: TreeEnsembleProbe(kind=kind, n_estimators=cfg.trees, seed=cfg.seed, feature_names=names).fit(
            np.nan_to_num(feats[tr]), y[tr]
        )
        for kind in ("gbt", "rf")
    }
    for kind, model in ensembles.items():
        preds[f"attn_ensemble_{kind}"] = model.predict_proba(np.nan_to_num(feats))[:, 1]
        save_probe(model, out / f"attn_ensemble_{kind}")
        summary["probes"][f"attn_ensemble_{kind}"] = _entry(preds[f"attn_ensemble_{kind}"], y, va, te)

    from vrp.analysis.heads import head_probes  # per-head ranking, top-k head signals, per-head probe

    entries, head_preds = head_probes(run_dir, data, split, cfg, out)
    summary["probes"].update(entries)
    preds.update(head_preds)

    from vrp.analysis.consistency import train_consistency_head  # S_SC from the residual (runs with samples)

    summary["consistency_head"] = train_consistency_head(run_dir, data, split, cfg)

    which = np.full(n, "train", dtype=object)
    which[va], which[te] = "val", "test"
    cols = {"id": pa.array(data["ids"]), "split": pa.array(which.tolist())}
    cols.update({name: pa.array(p.astype(np.float64)) for name, p in preds.items()})
    write_table(out / "predictions.parquet", pa.table(cols))
    atomic_write_json(out / "split.json", {s: [data["ids"][i] for i in idx] for s, idx in
                                           (("train", tr), ("val", va), ("test", te))})  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    return summary


def _entry(p: np.ndarray, y: np.ndarray, va: np.ndarray, te: np.ndarray, **extra) -> dict:
    return {**extra, "val_auroc": _auroc(p[va], y[va]), "test_auroc": _auroc(p[te], y[te])}
