"""The single-pass consistency head of a run: S_SC distilled into the decision-position residual.

Self-consistency (method.md §5) needs K sampled answers per item; the head predicts it from the
residual of the greedy pass alone, so a monitor can report it without sampling (the source
paper's recommendation 2). It is trained by ``vrp probe`` on runs with samples
(``vrp run --samples K``, K > 0) and never sees the correctness label: its target is S_SC.

``vrp probe`` (:func:`train_consistency_head`, called by
:func:`vrp.analysis.probing.train_probes`) uses the probes' split: fitted on the train items,
C and the layer chosen on validation MSE (:func:`vrp.probes.consistency.sweep_consistency`),
and writes

    probes/consistency_head/       the head (probe.safetensors + probe.json, vrp.probes.io), its
                                   ``layer`` the chosen one
    probes/consistency.parquet     id, split, prediction (the head's S_SC for every item),
                                   predicted_consistency (the same on the test split, NaN on the
                                   train and validation items it was fitted and chosen on: the
                                   derived signal of the predictor table, measured on held-out items)

and its entry ``consistency_head`` in ``probes/summary.json`` (``{"skipped": reason}`` when the
run has no samples or S_SC cannot be learned). ``vrp analyze`` (:func:`analyze_consistency`)
writes ``analysis/consistency.json``: on the test items, the head's correlation with the real
S_SC (Pearson and Spearman with 95% CIs) and the AUROC for correctness of the head, of the real
S_SC and of the dense probe, with paired tests of the head against each (DeLong and a paired
bootstrap on the same items).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.runs.rundir import atomic_write_json, write_table

log = logging.getLogger(__name__)

HEAD_DIR = "consistency_head"  # under RUN_DIR/probes/
PREDICTIONS = "probes/consistency.parquet"
ANALYSIS = "analysis/consistency.json"
SIGNAL = "predicted_consistency"  # the derived signal, and the monitor's key
TARGET = "self_consistency"  # the items.parquet column it learns
PLAIN_PROBE = "probe_dense"  # the correctness probe it is compared with
FORMAT = "vrp-consistency-1"


class NoConsistencyTarget(ValueError):
    """The run has no self-consistency to learn (no samples, or every S_SC undefined)."""


def consistency_target(run_dir: Path, ids: list[str]) -> tuple[np.ndarray, int]:
    """S_SC of the items ``ids`` (float64 [n], NaN where undefined) and K, the samples per item.

    Raises:
        NoConsistencyTarget: the run was made with ``--samples 0``, or no item has an S_SC.
    """
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").is_file() else {}
    k = int(manifest.get("config", {}).get("samples", 0) or 0)
    if k < 1:
        raise NoConsistencyTarget(
            f"{run_dir} was run with --samples 0: self-consistency S_SC, the consistency head's target, needs "
            "K sampled answers per item; rerun with `vrp run --samples K` (K > 0) to train the head"
        )
    table = pq.read_table(run_dir / "items.parquet", columns=["id", TARGET]).to_pandas().set_index("id")
    s = table[TARGET].reindex(list(ids)).to_numpy(np.float64)
    if not np.isfinite(s).any():
        raise NoConsistencyTarget(f"{run_dir}: no item has a self-consistency value (items.parquet, {TARGET})")
    return s, k


def _remove_stale(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "probes" / HEAD_DIR, ignore_errors=True)
    (run_dir / PREDICTIONS).unlink(missing_ok=True)


def train_consistency_head(run_dir: Path, data: dict, split, cfg) -> dict:
    """Train, choose and save the consistency head of a run; returns its ``probes/summary.json`` entry.

    Args:
        run_dir: the run directory.
        data: :func:`vrp.analysis.probing.load_probe_data`'s arrays (``ids``, ``X`` [n, layers, d],
            ``residual_layers``).
        split: the probes' :class:`vrp.probes.split.Split` (index arrays into ``data``).
        cfg: the :class:`vrp.analysis.config.ProbeConfig` (its C grid, seed and max_iter).

    Returns:
        The entry: the chosen layer and C, validation and test MSE / R^2 per layer, K, the item
        counts; or ``{"skipped": reason}`` (files of an earlier head removed) when the run has no
        samples, a split has no item with an S_SC, or S_SC is constant on the training items.
    """
    from vrp.probes.consistency import sweep_consistency
    from vrp.probes.io import save_probe

    run_dir = Path(run_dir)
    try:
        s, k = consistency_target(run_dir, data["ids"])
        sides = {name: idx[np.isfinite(s[idx])] for name, idx in (("train", split.train), ("val", split.val),
                                                                    ("test", split.test))}  # fmt: skip
        empty = [name for name, idx in sides.items() if not idx.size]
        if empty:
            raise NoConsistencyTarget(f"no item of the {' and '.join(empty)} split(s) has a self-consistency value")
        X = data["X"]
        tr, va, te = sides["train"], sides["val"], sides["test"]
        res = sweep_consistency(X[tr], s[tr], X[va], s[va], Cs=cfg.cs, seed=cfg.seed, max_iter=cfg.max_iter)
    except ValueError as e:  # NoConsistencyTarget, or a target constant on train
        _remove_stale(run_dir)
        log.warning("consistency head skipped: %s", e)
        return {"skipped": str(e)}
    head = res.model
    save_probe(head, run_dir / "probes" / HEAD_DIR)
    by_layer = head.predict_layers(X)  # [n, L]
    pred = by_layer[:, head.layer]
    which = np.full(len(s), "train", dtype=object)
    which[split.val], which[split.test] = "val", "test"
    held_out = np.where(which == "test", pred, np.nan)
    write_table(run_dir / PREDICTIONS, pa.table({
        "id": pa.array(data["ids"]), "split": pa.array(which.tolist()),
        "prediction": pa.array(pred), SIGNAL: pa.array(held_out),
    }))  # fmt: skip

    def mse(idx: np.ndarray) -> list[float]:
        return ((by_layer[idx] - s[idx, None]) ** 2).mean(0).tolist()

    def r2(m: float, idx: np.ndarray) -> float:
        var = float(s[idx].var())
        return 1 - m / var if var > 0 else float("nan")

    layer = head.layer
    val_mse, test_mse = mse(va), mse(te)
    return {
        "target": TARGET, "samples": k, "model": "fractional logistic regression (quasi-binomial), L2",
        "chosen_by": "validation MSE", "layer_index": layer, "residual_layer": data["residual_layers"][layer],
        "C": float(head.C[layer]), "n_train": int(tr.size), "n_val": int(va.size), "n_test": int(te.size),
        "val_mse": val_mse[layer], "val_r2": r2(val_mse[layer], va),
        "test_mse": test_mse[layer], "test_r2": r2(test_mse[layer], te),
        "val_mse_by_layer": val_mse, "test_mse_by_layer": test_mse,
        "best_C_by_layer": np.asarray(head.C).tolist(),
    }  # fmt: skip


def describe(doc: dict) -> str:
    """One paragraph of ``analysis/consistency.json``'s numbers (what ``vrp analyze`` prints)."""

    def f(x, fmt=".3f") -> str:
        return "undefined" if x is None or x != x else format(x, fmt)

    def ci(d: dict, key: str) -> str:
        return f"{f(d.get(key))} [{f(d.get('ci_low'))}, {f(d.get('ci_high'))}]"

    c, a, p = doc["correlation"], doc["auroc"], doc["paired"]
    real, probe = p[f"{SIGNAL} - {TARGET}"], p[f"{SIGNAL} - {PLAIN_PROBE}"]
    return (
        f"consistency head on the {doc['n']} test items: vs the real S_SC Pearson r {ci(c['pearson'], 'r')}, "
        f"Spearman rho {ci(c['spearman'], 'r')}; AUROC for correctness {ci(a[SIGNAL], 'auroc')} "
        f"(real S_SC {ci(a[TARGET], 'auroc')}, dense probe {ci(a[PLAIN_PROBE], 'auroc')}); "
        f"head - S_SC {ci(real, 'diff')} (DeLong p {f(real.get('p_delong'), '.4f')}), "
        f"head - probe {ci(probe, 'diff')} (DeLong p {f(probe.get('p_delong'), '.4f')}). Wrote {ANALYSIS}"
    )


def _auroc(scores: np.ndarray, y: np.ndarray, cfg) -> dict:
    from vrp.stats.auroc import auroc_ci

    a = auroc_ci(scores, y, n_boot=cfg.n_boot, level=cfg.level, n_perm=cfg.n_perm, seed=cfg.seed)
    return {"auroc": a.auroc, "ci_low": a.ci_low, "ci_high": a.ci_high, "p": a.p_value, "n": a.n,
            "undefined": a.undefined}  # fmt: skip


def _paired(a: np.ndarray, b: np.ndarray, y: np.ndarray, cfg) -> dict:
    from vrp.stats.paired import paired_auroc_diff

    r = paired_auroc_diff(a, b, y, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
    keys = ("auroc_a", "auroc_b", "diff", "ci_low", "ci_high", "p_bootstrap", "p_delong", "n", "undefined",
            "delong_undefined")  # fmt: skip
    return {k: getattr(r, k) for k in keys}


def _corr(r) -> dict:
    return {"r": r.r, "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p_value, "n": r.n, "undefined": r.undefined}


def consistency_arrays(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The test items' arrays the analysis compares (None without a head): ``ids``, ``predicted``
    (the head), ``real`` (S_SC), ``probe`` (the dense probe's p_correct) and ``correct`` [n], on
    the test items where all four are defined."""
    run_dir = Path(run_dir)
    path, preds = run_dir / PREDICTIONS, run_dir / "probes" / "predictions.parquet"
    if not path.is_file():
        return None
    head = pq.read_table(path).to_pandas().set_index("id")
    head = head[head["split"] == "test"]
    items = pq.read_table(run_dir / "items.parquet", columns=["id", "correct", TARGET]).to_pandas().set_index("id")
    probe = np.full(len(head), np.nan)
    if preds.is_file():
        p = pq.read_table(preds).to_pandas().set_index("id")
        if PLAIN_PROBE in p:
            probe = p[PLAIN_PROBE].reindex(head.index).to_numpy(np.float64)
    out = {
        "predicted": head[SIGNAL].to_numpy(np.float64),
        "real": items[TARGET].reindex(head.index).to_numpy(np.float64),
        "probe": probe,
        "correct": items["correct"].reindex(head.index).to_numpy(np.float64),
    }
    keep = np.logical_and.reduce([np.isfinite(v) for v in out.values()])
    return {"ids": head.index.to_numpy()[keep], **{k: v[keep] for k, v in out.items()}}


def analyze_consistency(run_dir: Path, cfg=None) -> dict | None:
    """Write ``analysis/consistency.json`` for a run with a consistency head; returns its content.

    On the test items where the head, the real S_SC and the dense probe are all defined: the
    head's MSE and R^2 against S_SC, Pearson and Spearman correlation with 95% CIs
    (:mod:`vrp.stats.correlation`), the AUROC for correctness of each of the three with its
    bootstrap CI and permutation p, and :func:`vrp.stats.paired.paired_auroc_diff` of the head
    against the real S_SC and against the dense probe (same items). A run without a head gets no
    file (a stale one is removed) and None.

    Args:
        run_dir: a probed run directory.
        cfg: the :class:`vrp.analysis.config.AnalyzeConfig` (resamples, level, seed).
    """
    from vrp.analysis.config import AnalyzeConfig
    from vrp.stats.correlation import pearson, spearman

    cfg = cfg or AnalyzeConfig()
    run_dir = Path(run_dir)
    out = run_dir / ANALYSIS
    arrays = consistency_arrays(run_dir)
    if arrays is None:
        out.unlink(missing_ok=True)
        return None
    summary_path = run_dir / "probes" / "summary.json"
    entry = json.loads(summary_path.read_text()).get("consistency_head", {}) if summary_path.is_file() else {}
    pc, sc, probe, y = arrays["predicted"], arrays["real"], arrays["probe"], arrays["correct"]
    err = float(((pc - sc) ** 2).mean()) if pc.size else float("nan")
    var = float(sc.var()) if sc.size else float("nan")
    doc = {
        "format": FORMAT,
        "split": "test",
        "n": int(pc.size),
        "head": {k: entry.get(k) for k in ("layer_index", "residual_layer", "C", "samples", "model", "chosen_by")},
        "config": {"n_boot": cfg.n_boot, "n_perm": cfg.n_perm, "level": cfg.level, "seed": cfg.seed},
        "mse": err,
        "r2": 1 - err / var if var > 0 else float("nan"),
        "correlation": {"pearson": _corr(pearson(pc, sc, cfg.level)), "spearman": _corr(spearman(pc, sc, cfg.level))},
        "auroc": {SIGNAL: _auroc(pc, y, cfg), TARGET: _auroc(sc, y, cfg), PLAIN_PROBE: _auroc(probe, y, cfg)},
        "paired": {f"{SIGNAL} - {TARGET}": _paired(pc, sc, y, cfg), f"{SIGNAL} - {PLAIN_PROBE}": _paired(pc, probe, y, cfg)},
    }  # fmt: skip
    out.parent.mkdir(exist_ok=True)
    atomic_write_json(out, doc)
    return json.loads(out.read_text())
