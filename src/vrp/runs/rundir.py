"""The run directory: manifest, per-item table, failures. Files are written atomically.

Layout (see README "Run directory"):
    manifest.json     resolved config, model identity, data provenance, versions, times, counts
    items.parquet     one row per answered item
    failures.jsonl    one JSON object per failed item: {id, stage, source, error}
    data/             the generated dataset when the data is ShapesWorld
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

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
    ]
)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), fsync=True)


def write_items(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def append_failures(path: Path, failures: list[dict]) -> None:
    if not failures:
        return
    with open(path, "a", encoding="utf-8") as f:
        for rec in failures:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def model_identity(path: str | Path) -> dict:
    """A hash of the model's config.json and weight files' names and sizes (cheap, stable)."""
    p = Path(path)
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    weights = sorted(q for q in p.iterdir() if q.suffix in (".safetensors", ".bin") or q.name.endswith(".index.json"))
    for w in weights:
        h.update(w.name.encode())
        h.update(str(w.stat().st_size).encode())
    return {"path": str(p.resolve()), "sha256": h.hexdigest(), "weight_files": [w.name for w in weights]}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("vrp", "torch", "torchvision", "transformers", "tokenizers", "numpy", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
