"""The run directory: manifest, per-item table, failures. Files are written atomically.

Layout (docs/run-directory.md):
    manifest.json     resolved config, model identity, data fingerprint, versions, times,
                      counts, status ("running", "interrupted", "complete"), accuracy
    items.parquet     one row per answered item (merged from the shards when the run ends)
    failures.jsonl    one JSON object per failed item: {id, stage, source, error}
    shards/           arrays + rows per batch, merged by size: the durable store (see vrp.runs.storage)
    run.log           the run's log
    data/             the generated dataset when the data is ShapesWorld
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.fileio import atomic_write_bytes

ITEMS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),  # the model's greedy answer, decoded, stripped
        ("gold", pa.list_(pa.string())),  # gold answers as given by the dataset
        ("score", pa.float64()),  # soft score in [0, 1] from the task's scorer
        ("correct", pa.bool_()),  # score >= threshold
        ("image", pa.string()),  # absolute image path
        ("n_answer_tokens", pa.int32()),
        ("meta", pa.string()),  # the item's meta dict as JSON
        ("samples", pa.list_(pa.string())),  # the K sampled answers (self-consistency), decoded
    ]
)


def items_schema() -> pa.Schema:
    """The columns of ``items.parquet``: item fields, then one float64 column per signal."""
    from vrp.signals.catalog import NAMES

    return pa.schema(list(ITEMS_SCHEMA) + [pa.field(n, pa.float64()) for n in NAMES])


def json_safe(obj: object) -> object:
    """``obj`` as plain JSON values: non-finite floats (NaN, inf) as None (null), numpy scalars as Python
    ones, mapping keys as strings."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def atomic_write_json(path: Path, obj: object) -> None:
    """Strict JSON (undefined numbers as null, never a bare NaN), written atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode(), fsync=True)


def write_table(path: Path, table: pa.Table) -> None:
    """Write a parquet file atomically (temp name, fsync, rename)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes(), fsync=True)


def write_failures(path: Path, failures: list[dict]) -> None:
    """``failures.jsonl``, rewritten whole and atomically (it is derived from the shards)."""
    text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in failures)
    atomic_write_bytes(path, text.encode(), fsync=True)


def fingerprint(records: list[dict]) -> str:
    """sha256 of the items' canonical JSON: the data a run answers, in order."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(rec, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


_HEAD, _SLICES, _SLICE, _WHOLE = 1 << 20, 64, 16 << 10, 8 << 20


def _weight_files(p: Path) -> list[Path]:
    return sorted(q for q in p.iterdir() if q.suffix in (".safetensors", ".bin") or q.name.endswith(".index.json"))


def content_sha256(path: str | Path) -> str:
    """sha256 of the weight files' *bytes* at fixed places: the first MiB of each file (the
    safetensors header, with every tensor's name, shape and offsets) and 64 slices of 16 KiB
    spread evenly over the rest (files up to 8 MiB whole). About 2 MiB read per file, so
    milliseconds even for a 7B model; two checkpoints of one architecture (a fine-tune, random
    weights) differ here while their config and file sizes agree."""
    h = hashlib.sha256()
    for w in _weight_files(Path(path)):
        size = w.stat().st_size
        h.update(f"{w.name}\0{size}\0".encode())
        with w.open("rb") as f:
            if size <= _WHOLE:
                h.update(f.read())
                continue
            h.update(f.read(_HEAD))
            span = size - _HEAD - _SLICE
            for i in range(_SLICES):
                f.seek(_HEAD + span * i // (_SLICES - 1))
                h.update(f.read(_SLICE))
    return h.hexdigest()


def model_identity(path: str | Path) -> dict:
    """The model's identity: ``sha256`` of its config.json and weight files' names and sizes,
    and ``content_sha256`` of the weights' bytes at fixed places (:func:`content_sha256`)."""
    p = Path(path)
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    weights = _weight_files(p)
    for w in weights:
        h.update(w.name.encode())
        h.update(str(w.stat().st_size).encode())
    return {"path": str(p.resolve()), "sha256": h.hexdigest(), "content_sha256": content_sha256(p),
            "weight_files": [w.name for w in weights]}  # fmt: skip


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("vrp", "torch", "torchvision", "transformers", "tokenizers", "numpy", "pyarrow", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
