"""Shards: the durable, append-only store of a run, committed per batch and compacted by size.

A shard ``shards/items-SSSSSSSS-EEEEEEEE.{safetensors,parquet}`` holds the items at positions
``[S, E)`` of the run's item list: its arrays (safetensors; the metadata holds the item ids,
the failures and the run's ``meta``) and its rows (parquet). Both files are written to a
temporary name, fsynced and renamed; the parquet file is written last and is the commit
marker: a shard exists iff its parquet file does (arrays without rows are debris).

**Per batch, then compacted.** ``vrp run`` commits every batch as its own shard
(:func:`write_shard`), so that a run killed at any moment loses at most the batches in
flight. When a run finishes, and when it resumes, :func:`compact` merges runs of adjacent
shards into shards of about ``shard_mb`` megabytes or ``shard_items`` items, so a finished
run holds a handful of files instead of two per batch. Merging is crash-safe at every step:

1. the merged shard ``[S, E)`` is written like any shard (arrays, then rows = commit), to a
   temporary name, fsynced and renamed; killed before its rows are renamed, it is debris and
   its sources are untouched;
2. the directory is fsynced; from here on the merged shard *supersedes* its sources: a reader
   that finds a committed shard inside another one ignores the inner one (the outer holds
   exactly the same rows and arrays), so the content a reader sees is the same whether the
   sources are still there or not;
3. the sources are deleted, rows first (a source without rows is debris).

:func:`recover` (called by the run, under its lock, before any work) deletes temporary
files, debris and superseded shards. Committed shards are therefore nested or disjoint,
never partly overlapping (that is reported as a corrupt directory).

Arrays (float16 unless noted; ``n`` = answered items of the shard, in row order):
    residual                  [n, 1 + S_l, d]  decision-position residual, embedding + stored blocks
    attention.<row>           [S_l, rows, cols] p_l (mean) or [S_l, H, rows, cols] raw per head (heads);
                              ``row`` indexes the shard's rows (renumbered when shards merge)
    view_box                  [n, 4] float32 (x0, y0, x1, y1): the pixel box of the image that the
                              attention maps' grid spans (its canonical view), with attention stored
    curve.<name>              [n, L], [n, L + 1] or [n, L, H] per-layer (per-head) curves (vrp.signals.catalog.CURVES;
                              docs/run-directory.md)
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import safe_open
from safetensors.numpy import save as st_save
from safetensors.numpy import save_file as st_save_file

from vrp.fileio import atomic_write_bytes
from vrp.runs.rundir import write_table

SHARD_DIR = "shards"
FORMAT = "vrp-shard-1"
_NAME = re.compile(r"^items-(\d{8})-(\d{8})\.parquet$")
_ATTENTION = "attention."

Span = tuple[int, int]


def shard_stem(start: int, end: int) -> str:
    return f"items-{start:08d}-{end:08d}"


def _metadata(start: int, end: int, ids: list[str], failures: list[dict], meta: str) -> dict[str, str]:
    return {
        "format": FORMAT,
        "start": str(start),
        "end": str(end),
        "ids": json.dumps(ids),
        "failures": json.dumps(failures, sort_keys=True),
        "meta": meta,
    }


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
    ids = table.column("id").to_pylist() if table.num_rows else []
    metadata = _metadata(start, end, ids, failures, json.dumps(meta or {}, sort_keys=True))
    data = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    _fault("before_arrays")
    atomic_write_bytes(d / f"{stem}.safetensors", data, fsync=True)
    _fault("after_arrays")
    write_table(d / f"{stem}.parquet", table)
    _fault("after_rows")


_FAULT_COUNTS: dict[str, int] = {}


def _fault(stage: str) -> None:
    """Test hook: ``VRP_TEST_FAULT=STAGE:N`` SIGKILLs this process the N-th time it reaches
    STAGE, to test recovery from a crash at the worst moments. Stages of a batch commit:
    before_arrays, after_arrays, after_rows; of a merge (:func:`compact`): compact_before_arrays,
    compact_after_arrays, compact_after_rows (committed, sources not yet deleted),
    compact_delete (after each source's rows are deleted, before its arrays are),
    compact_after_delete. Unset in normal use."""
    spec = os.environ.get("VRP_TEST_FAULT")
    if not spec or spec.rsplit(":", 1)[0] != stage:
        return
    _FAULT_COUNTS[stage] = _FAULT_COUNTS.get(stage, 0) + 1
    if _FAULT_COUNTS[stage] == int(spec.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


# ---- which shards count ----------------------------------------------------------------


def _committed(d: Path) -> dict[Span, Path]:
    """Every committed shard (rows and arrays both present), superseded ones included."""
    found: dict[Span, Path] = {}
    if d.is_dir():
        for p in d.iterdir():
            m = _NAME.match(p.name)
            if m and p.with_suffix(".safetensors").is_file():
                found[(int(m.group(1)), int(m.group(2)))] = p
    return found


def _effective(spans: list[Span]) -> tuple[list[Span], list[Span]]:
    """(shards that count, superseded ones) of a set of committed spans: a span inside another
    is superseded (a merge committed before its sources were deleted); partial overlaps are
    corruption."""
    keep: list[Span] = []
    dropped: list[Span] = []
    for s, e in sorted(spans, key=lambda se: (se[0], -se[1])):
        if keep and s < keep[-1][1]:
            if e <= keep[-1][1]:
                dropped.append((s, e))
                continue
            s0, e0 = keep[-1]
            raise RuntimeError(f"overlapping shards [{s0}, {e0}) and [{s}, {e}): the run directory is corrupt")
        keep.append((s, e))
    return keep, dropped


def completed(run_dir: Path) -> dict[tuple[int, int], Path]:
    """The shards that count, ``(start, end) -> parquet path`` in item order: committed, and
    not superseded by a merged shard covering them. Reads only; :func:`recover` cleans up."""
    found = _committed(Path(run_dir) / SHARD_DIR)
    keep, _ = _effective(list(found))
    return {span: found[span] for span in keep}


def recover(run_dir: Path) -> int:
    """Delete what a crash can leave behind: temporary files, arrays whose rows were never
    committed (or were deleted first), superseded shards. Only the directory's writer (the
    holder of its lock) may call it. Returns the number of files deleted."""
    d = Path(run_dir) / SHARD_DIR
    if not d.is_dir():
        return 0
    found = _committed(d)
    _, dropped = _effective(list(found))
    removed = 0
    for span in dropped:  # rows first: a crash in between leaves debris, never a shard
        found[span].unlink()
        found[span].with_suffix(".safetensors").unlink(missing_ok=True)
        removed += 2
    for p in d.iterdir():
        stem = p.name.split(".")[0]
        if p.name.startswith(".") or (p.suffix == ".safetensors" and not (d / f"{stem}.parquet").is_file()):
            p.unlink(missing_ok=True)
            removed += 1
    if removed:
        _fsync_dir(d)
    return removed


def pending(done: dict[Span, Path] | list[Span], spans: list[Span]) -> list[Span]:
    """The batch spans that no shard of ``done`` (as :func:`completed` returns) covers."""
    have = sorted(done)
    starts = [s for s, _ in have]
    out = []
    for s, e in spans:
        i = bisect.bisect_right(starts, s) - 1
        if i >= 0 and have[i][1] >= e:
            continue
        inside = (i >= 0 and have[i][1] > s) or (i + 1 < len(have) and have[i + 1][0] < e)
        if inside:
            raise RuntimeError(f"a shard covers part of the batch [{s}, {e}): the run directory is corrupt")
        out.append((s, e))
    return out


# ---- readers -----------------------------------------------------------------------------


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
    """(item ids, arrays) of every shard in order; arrays are loaded lazily per shard."""
    for p in completed(run_dir).values():
        with safe_open(str(p.with_suffix(".safetensors")), framework="np") as f:
            ids = json.loads(f.metadata()["ids"])
            names = list(f.keys())
            yield ids, {k: f.get_tensor(k) for k in names}


def load_stacked(run_dir: Path, key: str) -> tuple[list[str], np.ndarray]:
    """One stacked array over all shards (e.g. ``residual``, ``curve.margin``)."""
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


def shard_files(run_dir: Path) -> int:
    """The number of files under ``shards/`` (two per shard once :func:`recover` has run)."""
    d = Path(run_dir) / SHARD_DIR
    return sum(1 for p in d.iterdir() if p.is_file()) if d.is_dir() else 0


def clear(run_dir: Path) -> None:
    """Remove every shard (``--force``)."""
    d = Path(run_dir) / SHARD_DIR
    if d.is_dir():
        for p in d.iterdir():
            p.unlink()
        os.rmdir(d)


# ---- compaction --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shard:
    start: int
    end: int
    path: Path  # the parquet file
    nbytes: int  # both files
    rows: int
    kind: tuple  # what must agree for two shards to merge: meta, row schema, array layouts


def _describe(span: Span, path: Path) -> _Shard:
    arrays = path.with_suffix(".safetensors")
    with safe_open(str(arrays), framework="np") as f:
        md, names = f.metadata(), list(f.keys())
        rows = len(json.loads(md["ids"]))
        layout = frozenset(
            (k, tuple(f.get_slice(k).get_shape())[1:], f.get_slice(k).get_dtype())
            for k in names
            if not k.startswith(_ATTENTION)
        )
        attention = any(k.startswith(_ATTENTION) for k in names)
    schema = pq.read_schema(path).remove_metadata().to_string()
    # an empty shard (every item of its batch failed) holds no arrays: it merges with any layout
    kind = (md["meta"], schema, (layout, attention) if rows else None)
    return _Shard(span[0], span[1], path, path.stat().st_size + arrays.stat().st_size, rows, kind)


def _fits(group: list[_Shard], nxt: _Shard) -> bool:
    layouts = {g.kind[2] for g in group if g.kind[2] is not None}
    return (
        nxt.start == group[-1].end  # adjacent: a merged shard never spans a missing batch
        and nxt.kind[:2] == group[0].kind[:2]
        and (nxt.kind[2] is None or not layouts or layouts == {nxt.kind[2]})
    )


def _plan(shards: list[_Shard], target_bytes: int, max_items: int) -> list[list[_Shard]]:
    """Cut the shards, in order, into runs to merge: adjacent, alike, at most ``target_bytes``
    (sum of file sizes) and ``max_items`` item positions each; a run of one stays as it is."""
    groups: list[list[_Shard]] = []
    for sh in shards:
        cur = groups[-1] if groups else None
        if (
            cur
            and _fits(cur, sh)
            and sum(g.nbytes for g in cur) + sh.nbytes <= target_bytes
            and sh.end - cur[0].start <= max_items
        ):
            cur.append(sh)
        else:
            groups.append([sh])
    return groups


def compact(run_dir: Path, target_bytes: int, max_items: int) -> int:
    """Merge adjacent shards into shards of at most ``target_bytes`` / ``max_items`` items
    (crash-safe at every step; see the module docstring). ``target_bytes <= 0`` only recovers.
    Only the directory's writer may call it. Returns the number of merged shards written."""
    recover(run_dir)
    if target_bytes <= 0:
        return 0
    d = Path(run_dir) / SHARD_DIR
    shards = [_describe(span, p) for span, p in completed(run_dir).items()]
    written = 0
    for group in _plan(shards, target_bytes, max_items):
        if len(group) > 1:
            _merge(d, group)
            written += 1
    _fault("compact_after_delete")
    return written


def _merge(d: Path, group: list[_Shard]) -> None:
    """Write the shard covering ``group``, commit it, then delete the shards it replaces."""
    start, end = group[0].start, group[-1].end
    ids: list[str] = []
    failures: list[dict] = []
    stacked: dict[str, list[np.ndarray]] = {}
    tensors: dict[str, np.ndarray] = {}
    for sh in group:
        with safe_open(str(sh.path.with_suffix(".safetensors")), framework="np") as f:
            md, names = f.metadata(), list(f.keys())
            for k in names:
                if k.startswith(_ATTENTION):  # per-item maps: the row within the merged shard
                    tensors[f"{_ATTENTION}{len(ids) + int(k[len(_ATTENTION) :])}"] = f.get_tensor(k)
                else:
                    stacked.setdefault(k, []).append(f.get_tensor(k))
            ids.extend(json.loads(md["ids"]))
            failures.extend(json.loads(md["failures"]))
            meta = md["meta"]
    while stacked:  # one copy of each array at a time: a merge holds about twice its target in memory
        k, parts = stacked.popitem()
        tensors[k] = np.concatenate(parts)
        if len(tensors[k]) != len(ids):
            raise RuntimeError(f"shards [{start}, {end}) of {d} disagree on their items: not merged")
    table = pa.concat_tables([pq.read_table(sh.path) for sh in group])
    if table.column("id").to_pylist() != ids:
        raise RuntimeError(f"shards [{start}, {end}) of {d} disagree on their items: not merged")
    stem = shard_stem(start, end)
    _fault("compact_before_arrays")
    tmp = d / f".{stem}.safetensors.tmp"  # as atomic_write_bytes, without the bytes in memory
    st_save_file(tensors, str(tmp), metadata=_metadata(start, end, ids, failures, meta))
    os.chmod(tmp, group[0].path.stat().st_mode & 0o777)  # save_file makes it 0600: as the shards it replaces
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, d / f"{stem}.safetensors")
    _fault("compact_after_arrays")
    write_table(d / f"{stem}.parquet", table)  # the commit: from here on it supersedes the group
    _fsync_dir(d)  # ... durably, before any source is deleted
    _fault("compact_after_rows")
    for sh in group:
        sh.path.unlink()
        _fault("compact_delete")
        sh.path.with_suffix(".safetensors").unlink()
    _fsync_dir(d)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
