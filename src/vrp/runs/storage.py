"""Shards: the durable, append-only store of a run, one pair of files per batch of items.

``shards/items-SSSSSSSS-EEEEEEEE.safetensors`` holds the batch's arrays (item positions
``[S, E)`` of the run's item list) and, in its metadata, the batch's item ids and
failures; ``shards/items-SSSSSSSS-EEEEEEEE.parquet`` holds its rows. Both are written to
a temporary name and renamed (fsynced); the parquet file is written last and is the
commit marker: a batch is complete iff its parquet file exists. A run killed at any
moment leaves only complete batches and temporary files, which resume deletes.

Arrays (float16 unless noted; ``n`` = answered items of the batch, in row order):
    residual                  [n, 1 + S_l, d]  decision-position residual, embedding + stored blocks
    attention.<row>           [S_l, rows, cols] p_l (mean) or [S_l, H, rows, cols] raw per head (heads)
    view_box                  [n, 4] float32 (x0, y0, x1, y1): the pixel box of the image that the
                              attention maps' grid spans (its canonical view), with attention stored
    curve.<name>              [n, L] or [n, L + 1] float32 per-layer curves (vrp.signals.catalog.CURVES; docs/run-directory.md)
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import safe_open
from safetensors.numpy import save as st_save

from vrp.fileio import atomic_write_bytes
from vrp.runs.rundir import write_table

SHARD_DIR = "shards"
FORMAT = "vrp-shard-1"
_NAME = re.compile(r"^items-(\d{8})-(\d{8})\.parquet$")


def shard_stem(start: int, end: int) -> str:
    return f"items-{start:08d}-{end:08d}"


def write_shard(
    run_dir: Path,
    start: int,
    end: int,
    table: pa.Table,
    tensors: dict[str, np.ndarray],
    failures: list[dict],
    meta: dict | None = None,
) -> None:
    """Commit one batch: arrays + metadata first, rows (the commit marker) last."""
    d = Path(run_dir) / SHARD_DIR
    d.mkdir(parents=True, exist_ok=True)
    stem = shard_stem(start, end)
    metadata = {
        "format": FORMAT,
        "start": str(start),
        "end": str(end),
        "ids": json.dumps(table.column("id").to_pylist() if table.num_rows else []),
        "failures": json.dumps(failures, sort_keys=True),
        "meta": json.dumps(meta or {}, sort_keys=True),
    }
    data = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    _fault("before_arrays")
    atomic_write_bytes(d / f"{stem}.safetensors", data, fsync=True)
    _fault("after_arrays")
    write_table(d / f"{stem}.parquet", table)
    _fault("after_rows")


_FAULT_COUNTS: dict[str, int] = {}


def _fault(stage: str) -> None:
    """Test hook: ``VRP_TEST_FAULT=STAGE:N`` SIGKILLs this process the N-th time it reaches
    STAGE (before_arrays, after_arrays, after_rows), to test recovery from a crash at the
    worst moments. Unset in normal use."""
    spec = os.environ.get("VRP_TEST_FAULT")
    if not spec or spec.rsplit(":", 1)[0] != stage:
        return
    _FAULT_COUNTS[stage] = _FAULT_COUNTS.get(stage, 0) + 1
    if _FAULT_COUNTS[stage] == int(spec.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def completed(run_dir: Path) -> dict[tuple[int, int], Path]:
    """Committed batches ``(start, end) -> parquet path``; removes leftover temporary files
    and arrays whose batch was never committed."""
    d = Path(run_dir) / SHARD_DIR
    if not d.is_dir():
        return {}
    done: dict[tuple[int, int], Path] = {}
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.with_suffix(".safetensors").is_file():
            done[(int(m.group(1)), int(m.group(2)))] = p
    for p in d.iterdir():
        stem = p.name.split(".")[0]
        if p.name.startswith(".") or (p.suffix == ".safetensors" and not (d / f"{stem}.parquet").is_file()):
            p.unlink(missing_ok=True)
    return dict(sorted(done.items()))


def _check_disjoint(spans: list[tuple[int, int]]) -> None:
    for (s0, e0), (s1, e1) in itertools.pairwise(spans):
        if s1 < e0:
            raise RuntimeError(f"overlapping shards [{s0}, {e0}) and [{s1}, {e1}): the run directory is corrupt")


def read_rows(run_dir: Path) -> pa.Table | None:
    """All committed rows in item order (None if no batch is committed)."""
    done = completed(run_dir)
    _check_disjoint(list(done))
    tables = [pq.read_table(p) for p in done.values()]
    return pa.concat_tables(tables) if tables else None


def read_failures(run_dir: Path) -> list[dict]:
    """The failures recorded by every committed batch, in item order."""
    out: list[dict] = []
    for p in completed(run_dir).values():
        with safe_open(str(p.with_suffix(".safetensors")), framework="np") as f:
            out.extend(json.loads(f.metadata()["failures"]))
    return out


def iter_shards(run_dir: Path) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """(item ids, arrays) of every committed batch in order; arrays are loaded lazily per shard."""
    for p in completed(run_dir).values():
        with safe_open(str(p.with_suffix(".safetensors")), framework="np") as f:
            ids = json.loads(f.metadata()["ids"])
            names = list(f.keys())
            yield ids, {k: f.get_tensor(k) for k in names}


def load_stacked(run_dir: Path, key: str) -> tuple[list[str], np.ndarray]:
    """One stacked array over all committed batches (e.g. ``residual``, ``curve.margin``)."""
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for p in completed(run_dir).values():
        with safe_open(str(p.with_suffix(".safetensors")), framework="np") as f:
            names = list(f.keys())
            if key in names:
                parts.append(f.get_tensor(key))
                ids.extend(json.loads(f.metadata()["ids"]))
    if not parts:
        raise KeyError(f"no shard of {run_dir} holds an array {key!r}")
    return ids, np.concatenate(parts)


def shard_bytes(run_dir: Path) -> int:
    d = Path(run_dir) / SHARD_DIR
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file()) if d.is_dir() else 0


def clear(run_dir: Path) -> None:
    """Remove every shard (``--force``)."""
    d = Path(run_dir) / SHARD_DIR
    if d.is_dir():
        for p in d.iterdir():
            p.unlink()
        os.rmdir(d)
