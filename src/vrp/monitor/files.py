"""The monitor directory: ``monitor.safetensors`` (the probe's arrays) + ``monitor.json``.

    monitor.safetensors   coef [d], mean [d], scale [d] (float32), intercept [1] (float32):
                          p = sigmoid(((h - mean) / scale) . coef + intercept); with a consistency
                          head (optional, section ``consistency_head`` of monitor.json) also
                          consistency.coef, .mean, .scale [d] and .intercept [1], the same formula
                          for the predicted self-consistency
    monitor.json          format version, the model's identity, where and how the residual is
                          read, the metrics, the abstention threshold, and the sha256 of
                          monitor.safetensors (a changed or truncated file is refused)

Both files are written atomically; ``monitor.json`` last, so a directory whose export was
interrupted either has no ``monitor.json`` or one whose hash does not match. Nothing is
unpickled or executed on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from vrp.fileio import atomic_write_bytes

FORMAT = "vrp-monitor-1"
WEIGHTS = "monitor.safetensors"
META = "monitor.json"
ARRAYS = ("coef", "mean", "scale", "intercept")
HEAD = "consistency_head"  # optional section of monitor.json; its arrays are CONSISTENCY_ARRAYS
CONSISTENCY_ARRAYS = tuple(f"consistency.{k}" for k in ARRAYS)
HEAD_REQUIRED = ("residual_layer", "input_dtype")
# top-level sections of monitor.json and the keys the monitor reads from each
REQUIRED = {
    "model": ("model_type", "sha256", "d_model", "n_layers", "dtype", "name"),
    "generation": ("max_new_tokens", "batch_size"),
    "probe": ("residual_layer", "input_dtype"),
    "threshold": ("value",),
    "files": (WEIGHTS,),
}


class MonitorError(ValueError):
    """A monitor directory that cannot be used (missing, corrupted or incompatible files),
    or a model it refuses to attach to. The message names the file or the mismatch."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_monitor(directory: Path, arrays: dict[str, np.ndarray], doc: dict) -> Path:
    """Write the arrays and the JSON document (``doc["files"]`` is filled in here)."""
    names = ARRAYS + (CONSISTENCY_ARRAYS if HEAD in doc else ())
    missing = set(names) - set(arrays)
    if missing:
        raise ValueError(f"monitor arrays lack {sorted(missing)}")
    blob = save({k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in names})
    doc = {**doc, "format": FORMAT, "files": {WEIGHTS: {"sha256": sha256_bytes(blob), "bytes": len(blob)}}}
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"  # fail before touching the disk
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / WEIGHTS, blob, fsync=True)
    atomic_write_bytes(d / META, text.encode(), fsync=True)
    return d


def read_monitor(directory: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and validate a monitor directory; returns (arrays, document).

    Raises:
        MonitorError: a missing directory or file, invalid JSON, a wrong format version, a
            missing field, a safetensors file whose sha256 differs from the recorded one or
            that cannot be read, or arrays of the wrong shape.
    """
    d = Path(directory)
    if not d.is_dir():
        raise MonitorError(f"monitor directory {d} does not exist (write one with `vrp monitor export`)")
    meta = d / META
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MonitorError(
            f"{meta} is missing: {d} is not a monitor directory written by `vrp monitor export`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MonitorError(f"{meta} is not valid JSON ({e}); re-export the monitor") from None
    if not isinstance(doc, dict):
        raise MonitorError(f"{meta} must hold a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise MonitorError(
            f"{meta}: unsupported format {doc.get('format')!r} (this vrp reads {FORMAT!r}); re-export the monitor"
        )
    for section, keys in REQUIRED.items():
        sec = doc.get(section)
        lacking = [k for k in keys if not isinstance(sec, dict) or k not in sec]
        if lacking:
            raise MonitorError(f"{meta}: missing field(s) {', '.join(f'{section}.{k}' for k in lacking)}")
    if HEAD in doc:  # optional: monitors exported before the consistency head (or from runs without samples) lack it
        sec = doc[HEAD]
        lacking = [k for k in HEAD_REQUIRED if not isinstance(sec, dict) or k not in sec]
        if lacking:
            raise MonitorError(f"{meta}: missing field(s) {', '.join(f'{HEAD}.{k}' for k in lacking)}")
    arrays = _read_weights(d / WEIGHTS, doc["files"][WEIGHTS], ARRAYS + (CONSISTENCY_ARRAYS if HEAD in doc else ()))
    _check_shapes(d / WEIGHTS, arrays, doc)
    return arrays, doc


def _read_weights(path: Path, record: object, names: tuple[str, ...] = ARRAYS) -> dict[str, np.ndarray]:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MonitorError(f"{path} is missing; re-export the monitor") from None
    except OSError as e:
        raise MonitorError(f"cannot read {path}: {e}") from None
    want = record.get("sha256") if isinstance(record, dict) else None
    got = sha256_bytes(blob)
    if got != want:
        raise MonitorError(
            f"{path} is corrupted: its sha256 is {got}, monitor.json records {want}; re-export the monitor"
        )
    try:
        arrays = load(blob)
    except (SafetensorError, ValueError, OSError) as e:
        raise MonitorError(f"{path} is not a readable safetensors file: {e}") from None
    missing = [k for k in names if k not in arrays]
    if missing:
        raise MonitorError(f"{path} lacks the array(s) {missing}")
    return arrays


def _check_shapes(path: Path, arrays: dict[str, np.ndarray], doc: dict) -> None:
    d = doc["model"]["d_model"]
    for prefix in ("", "consistency.") if HEAD in doc else ("",):
        for k in ("coef", "mean", "scale"):
            if arrays[prefix + k].shape != (d,):
                raise MonitorError(
                    f"{path}: {prefix + k} has shape {arrays[prefix + k].shape}, expected ({d},) for d_model {d}"
                )
        if arrays[prefix + "intercept"].shape != (1,):
            raise MonitorError(
                f"{path}: {prefix}intercept has shape {arrays[prefix + 'intercept'].shape}, expected (1,)"
            )
        if not (arrays[prefix + "scale"] > 0).all():
            raise MonitorError(f"{path}: a non-positive {prefix}scale")
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise MonitorError(f"{path}: non-finite values")
