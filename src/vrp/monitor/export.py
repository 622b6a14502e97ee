"""``vrp monitor export``: package a run's chosen probe as a monitor directory.

The monitor is the probe ``vrp probe`` chose on validation (dense L2 by default), at its
layer, with its standardization, plus what is needed to use it on a live model: the
model's identity hash (the one the run recorded), the generation settings of the run
(the probe was trained on residuals of exactly that greedy call), and an abstention
threshold chosen on the **validation** split only, with the coverage and risk it gives on
the test split reported next to it. When the run has a consistency head (``vrp probe`` on a
run with samples, :mod:`vrp.analysis.consistency`), it is packaged beside the probe, at its own
chosen layer, so the monitor also returns the predicted self-consistency.

The threshold rule is in :mod:`vrp.monitor.thresholds`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vrp.config import ConfigError
from vrp.monitor.config import ExportConfig
from vrp.monitor.files import MonitorError, write_monitor
from vrp.monitor.thresholds import thresholds
from vrp.runs.rundir import json_safe

RESIDUAL_MEANING = "0 = embedding output (input of decoder block 0); i >= 1 = output of decoder block i - 1"
POSITION_MEANING = (
    "decision position: the last prompt token, read during the prefill call of the greedy generate "
    "(before the first answer token exists)"
)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MonitorError(f"{path} is missing: {what}")
    return path


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MonitorError(f"{path} is not valid JSON: {e}") from None


def _shard_meta(run_dir: Path) -> dict:
    from safetensors import safe_open

    from vrp.runs import storage

    shards = list(storage.completed(run_dir).values())
    if not shards:
        raise MonitorError(f"{run_dir} has no committed shards; the run is incomplete")
    with safe_open(str(shards[0].with_suffix(".safetensors")), framework="np") as f:
        return json.loads(f.metadata()["meta"])


def _content_hash(mod: dict) -> str | None:
    """The sampled content hash of the run's model: as the run recorded it, or (a run made before
    runs recorded it) hashed from the model folder if it is still there and unchanged."""
    from vrp.runs.rundir import model_identity

    if mod.get("content_sha256"):
        return mod["content_sha256"]
    path = Path(mod.get("path") or "")
    if not mod.get("path") or not (path / "config.json").is_file():
        return None
    ident = model_identity(path)
    return ident["content_sha256"] if ident["sha256"] == mod["sha256"] else None


# ---- export -------------------------------------------------------------------------------


def _run_predictions(run_dir: Path, probe: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (p_correct of ``probe``, correctness) of the run's items."""
    items_path = _need(run_dir / "items.parquet", "not a finished run; make one with `vrp run`")
    preds_path = _need(run_dir / "probes" / "predictions.parquet", f"run `vrp probe --run {run_dir}` first")
    preds = pq.read_table(preds_path).to_pandas().set_index("id")
    if probe not in preds:
        raise MonitorError(f"{preds_path} has no column {probe!r}; run `vrp probe --run {run_dir}` again")
    correct = pq.read_table(items_path, columns=["id", "correct"]).to_pandas().set_index("id")["correct"]
    missing = preds.index.difference(correct.index)
    if len(missing):
        raise MonitorError(f"{preds_path} names items that {items_path} lacks (e.g. {missing[0]!r})")
    out = {}
    for split in ("val", "test"):
        sel = preds[preds["split"] == split]
        out[split] = (sel[probe].to_numpy(np.float64), correct.loc[sel.index].to_numpy().astype(np.int64))
    return out


def _auroc(p: np.ndarray, y: np.ndarray) -> dict:
    from vrp.stats.auroc import auroc_ci

    a = auroc_ci(p, y, n_boot=10_000, n_perm=0, seed=0)
    return {"n": int(p.size), "auroc": a.auroc, "ci95": [a.ci_low, a.ci_high], "undefined": a.undefined}


def _chosen_probe(run_dir: Path, probe: str) -> tuple[dict, dict[str, np.ndarray], str]:
    """(summary entry, the chosen layer's arrays, penalty) of ``probe`` in a probed run."""
    from vrp.probes.io import load_probe
    from vrp.probes.linear import LayerwiseLogistic

    again = f"run `vrp probe --run {run_dir}` first"
    summary_path = _need(run_dir / "probes" / "summary.json", again)
    entry = _load_json(summary_path).get("probes", {}).get(probe)
    if not isinstance(entry, dict) or not {"layer_index", "residual_layer"} <= set(entry):
        raise MonitorError(f"{summary_path} has no chosen layer for {probe!r}; {again}")
    probe_dir = _need(run_dir / "probes" / probe / "probe.json", again).parent
    try:
        model = load_probe(probe_dir)
    except (OSError, ValueError, KeyError) as e:
        raise MonitorError(f"cannot load the probe in {probe_dir}: {e}") from None
    if not isinstance(model, LayerwiseLogistic):
        raise MonitorError(f"{probe_dir} holds a {type(model).__name__}, not a per-layer logistic probe")
    k = int(entry["layer_index"])
    arrays = {"coef": model.coef_[k], "mean": model.mean_[k], "scale": model.scale_[k]}
    arrays["intercept"] = np.asarray([model.intercept_[k]])
    return entry, arrays, model.penalty


def _consistency_head(run_dir: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(monitor.json section, arrays) of the run's consistency head at its chosen layer; None when the
    run has none (``vrp probe`` skipped it: no samples, the reason is in probes/summary.json)."""
    from vrp.analysis.consistency import ANALYSIS, HEAD_DIR, SIGNAL
    from vrp.probes.consistency import ConsistencyHead
    from vrp.probes.io import load_probe

    entry = _load_json(run_dir / "probes" / "summary.json").get("consistency_head")
    head_dir = run_dir / "probes" / HEAD_DIR
    if not isinstance(entry, dict) or "layer_index" not in entry or not (head_dir / "probe.json").is_file():
        return None
    try:
        head = load_probe(head_dir)
    except (OSError, ValueError, KeyError) as e:
        raise MonitorError(f"cannot load the consistency head in {head_dir}: {e}") from None
    if not isinstance(head, ConsistencyHead):
        raise MonitorError(f"{head_dir} holds a {type(head).__name__}, not a ConsistencyHead")
    k = int(entry["layer_index"])
    arrays = {"consistency.coef": head.coef_[k], "consistency.mean": head.mean_[k], "consistency.scale": head.scale_[k]}
    arrays["consistency.intercept"] = np.asarray([head.intercept_[k]])
    section = {
        "kind": "fractional logistic regression of self-consistency S_SC (quasi-binomial, L2)",
        "output": SIGNAL,
        "samples": entry.get("samples"),
        "C": float(entry.get("C", np.nan)),
        "layer_index": k,
        "residual_layer": int(entry["residual_layer"]),
        "residual_layer_meaning": RESIDUAL_MEANING,
        "position": "decision",
        "input_dtype": "float16",
        "formula": "s = sigmoid(((float32(float16(h)) - mean) / scale) . coef + intercept)",
        "metrics": {key: entry.get(key) for key in ("val_mse", "val_r2", "test_mse", "test_r2")},
    }
    analysis = run_dir / ANALYSIS
    if analysis.is_file():  # correlation with the real S_SC and AUROCs on the test split (vrp analyze)
        a = _load_json(analysis)
        section["metrics"].update(correlation=a.get("correlation"), auroc=a.get("auroc"))
    return section, arrays


def export_monitor(
    run_dir: str | Path,
    out_dir: str | Path,
    probe: str = ExportConfig.probe,
    target_risk: float | None = None,
    target_coverage: float | None = None,
) -> dict:
    """Package the chosen probe of a probed run as a monitor directory; returns monitor.json's content.

    Args:
        run_dir: a run directory on which ``vrp probe`` has run.
        out_dir: the monitor directory to write (created; its two files replaced).
        probe: ``probe_dense`` (L2, default) or ``probe_sparse`` (L1).
        target_risk: abstention threshold for this validation risk (0.1, ``DEFAULT_TARGET_RISK``,
            when neither target is given).
        target_coverage: abstention threshold for this validation coverage instead.

    Raises:
        MonitorError: the run, its manifest or its probes are missing or inconsistent, or the
            target cannot be met.
    """
    from vrp._version import __version__

    try:
        target_risk, target_coverage = ExportConfig(probe, target_risk, target_coverage).rule
    except ConfigError as e:
        raise MonitorError(str(e)) from None
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MonitorError(f"run directory {run_dir} does not exist")
    manifest = _load_json(_need(run_dir / "manifest.json", "not a run directory written by `vrp run`"))
    cfg, mod = manifest.get("config", {}), manifest.get("model", {})
    if not mod.get("sha256") or not mod.get("model_type"):
        raise MonitorError(f"{run_dir / 'manifest.json'} records no model identity (model.sha256, model.model_type)")
    entry, arrays, penalty = _chosen_probe(run_dir, probe)
    splits = _run_predictions(run_dir, probe)
    threshold, grid = thresholds(splits, target_risk, target_coverage)
    doc = {
        "vrp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": str(run_dir.resolve()),
            "probe": probe,
            "data": manifest.get("data"),
            "data_sha256": manifest.get("identity", {}).get("data_sha256"),
        },
        "model": {
            "name": cfg.get("model", mod.get("path")),
            "path": mod.get("path"),
            "model_type": mod["model_type"],
            "sha256": mod["sha256"],
            "identity": "sha256 of config.json and the weight files' names and sizes (vrp.runs.rundir.model_identity)",
            "content_sha256": _content_hash(mod),
            "d_model": int(arrays["coef"].shape[0]),
            "n_layers": int(_shard_meta(run_dir)["n_layers"]),
            "dtype": cfg.get("dtype", "float32"),
        },
        "generation": {
            "do_sample": False,
            "max_new_tokens": int(cfg.get("max_new_tokens", 10)),
            "batch_size": int(cfg.get("batch_size", 16)),
            "prompt": f"the {mod['model_type']} adapter's prompt(question)",
        },
        "probe": {
            "kind": "logistic",
            "penalty": penalty,
            "C": float(entry.get("C", np.nan)),
            "layer_index": int(entry["layer_index"]),
            "residual_layer": int(entry["residual_layer"]),
            "residual_layer_meaning": RESIDUAL_MEANING,
            "position": "decision",
            "position_meaning": POSITION_MEANING,
            "input_dtype": "float16",  # the run stores residuals as float16: the probe saw them rounded
            "formula": "p = sigmoid(((float32(float16(h)) - mean) / scale) . coef + intercept)",
        },
        "metrics": {split: _auroc(p, y) for split, (p, y) in splits.items()},
        "threshold": threshold,
        "operating_points": grid,
    }
    head = _consistency_head(run_dir)
    if head is not None:  # beside the probe: read from the same greedy pass's prefill
        doc["consistency_head"], head_arrays = head
        arrays = {**arrays, **head_arrays}
    doc = json_safe(doc)  # strict JSON: NaN -> null
    write_monitor(Path(out_dir), arrays, doc)
    return doc
