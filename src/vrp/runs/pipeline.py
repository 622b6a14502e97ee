"""``vrp run``: answer and measure every item, batch by batch, into a resumable run directory.

The item list is cut into batches of ``batch_size`` at fixed positions; each batch is
committed as one shard, and shards are merged by size when the run finishes or resumes (see
:mod:`vrp.runs.storage`). Running again on the same directory with the same config skips
the batches the shards cover, so a run killed at any moment resumes with results identical
to an uninterrupted run. SIGINT/SIGTERM stop after the batch in flight and write the merged
outputs before exiting. One process at a time writes a run directory: the run holds its
lock (:mod:`vrp.runs.lock`) from start to end, and a second one is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from vrp.config import RunConfig
from vrp.data.items import Item
from vrp.data.sources import load_data
from vrp.runs import storage
from vrp.runs.lock import directory_lock
from vrp.runs.rundir import atomic_write_json, fingerprint, model_identity, versions, write_failures, write_table
from vrp.stats.intervals import wilson_ci

log = logging.getLogger("vrp.run")
Progress = Callable[[int, int, int], None]


class RunExistsError(FileExistsError):
    """The run directory holds a run made with a different config or data."""


class Interrupted(RuntimeError):
    """The run was stopped by SIGINT/SIGTERM after flushing its completed batches."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summarize(rows: list[dict]) -> dict:
    """Accuracy overall and per task, each with its 95% Wilson interval."""

    def acc(rs: list[dict]) -> dict:
        k = sum(bool(r["correct"]) for r in rs)
        lo, hi = wilson_ci(k, len(rs))
        return {"n": len(rs), "correct": k, "accuracy": k / len(rs) if rs else float("nan"), "ci95": [lo, hi]}

    tasks = sorted({r["task"] for r in rows})
    return {"overall": acc(rows), "by_task": {t: acc([r for r in rows if r["task"] == t]) for t in tasks}}


def batches(n_items: int, batch_size: int) -> list[tuple[int, int]]:
    """The fixed ``[start, end)`` item spans of a run: the unit of work and of commit."""
    return [(s, min(s + batch_size, n_items)) for s in range(0, n_items, batch_size)]


# ---- the run directory's identity -------------------------------------------------------


def _identity(cfg: RunConfig, items: list[Item], model: dict) -> dict:
    """What makes two runs the same run: config (minus operational fields), data fingerprint,
    and ``model`` = :func:`model_identity` of the model folder."""
    comparable = {k: v for k, v in cfg.to_dict().items() if k not in RunConfig.OPERATIONAL}
    run_dir = Path(cfg.out).resolve()
    records = []
    for it in items:
        rec = dataclasses.asdict(it)
        image = Path(it.image).resolve()
        if image.is_relative_to(run_dir):  # generated into the run directory: a moved run stays resumable
            rec["image"] = image.relative_to(run_dir).as_posix()
        records.append(rec)
    return {
        "config": comparable,
        "data_sha256": fingerprint(records),
        "model_sha256": model["sha256"],
        "model_content_sha256": model["content_sha256"],
    }


def _check_resumable(run_dir: Path, identity: dict) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    old = manifest.get("identity")
    if old is None:
        raise RunExistsError(f"{run_dir} holds a run without a resumable identity; use --force to overwrite it")
    # an option added to vrp after the run was made takes its default there (what that run did)
    defaults = {k: v for k, v in RunConfig().to_dict().items() if k not in RunConfig.OPERATIONAL}
    old = {**old, "config": {**{k: v for k, v in defaults.items() if k in identity["config"]}, **old["config"]}}
    if old == identity:
        return
    diffs = [
        f"{k}: {old['config'].get(k)!r} -> {v!r}" for k, v in identity["config"].items() if old["config"].get(k) != v
    ]
    if old.get("data_sha256") != identity["data_sha256"]:
        diffs.append("the items (data fingerprint) differ")
    if old.get("model_sha256") != identity["model_sha256"]:
        diffs.append("the model's config or weight files differ")
    elif "model_content_sha256" not in old:
        diffs.append("the run was made by an older vrp, without the hash of the weights' bytes")
    elif old["model_content_sha256"] != identity.get("model_content_sha256"):
        diffs.append("the model's weights differ (same config and file sizes, different bytes)")
    same_nli_path = old["config"].get("nli_model") == identity["config"].get("nli_model")
    if same_nli_path and old.get("nli_model_content_sha256") != identity.get("nli_model_content_sha256"):
        diffs.append("the NLI model's weights differ")
    raise RunExistsError(
        f"{run_dir} holds a run made with a different setup ({'; '.join(diffs)}); "
        "resume it with the same options, choose another --out, or use --force to overwrite it"
    )


def _check_nli(cfg: RunConfig) -> dict | None:
    """The ``--nli-model`` checkpoint's labels and hashes for the manifest (None without one);
    a missing or non-NLI folder raises :class:`vrp.models.nli.NotAnNLIModelError` here, before
    the run starts."""
    if cfg.nli_model is None:
        return None
    from vrp.models.nli import check_nli_model

    labels = check_nli_model(cfg.nli_model)
    return {**model_identity(cfg.nli_model), **labels.describe()}


def _clear(run_dir: Path) -> None:
    storage.clear(run_dir)
    for name in ("items.parquet", "failures.jsonl", "manifest.json", "run.log"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "data", ignore_errors=True)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event (checked between batches) instead of killing the run."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():  # a second signal: give up immediately
            raise KeyboardInterrupt
        log.warning(
            "received %s: finishing the batch in flight, then writing what is done", signal.Signals(signum).name
        )
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _log_to(run_dir: Path) -> Iterator[None]:
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vrp")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


# ---- the run -------------------------------------------------------------------------


def run(cfg: RunConfig, force: bool = False, on_progress: Progress | None = None) -> dict:
    """Run (or resume) the pipeline of ``cfg``; returns the manifest written to the run directory.

    Args:
        cfg: the run's configuration.
        force: discard whatever the run directory holds and start over.
        on_progress: called as (done, total, failures) after each committed batch.

    Raises:
        RunExistsError: the directory holds a run with a different config, data or model.
        DirectoryLockedError: another process is running in the directory (its id is named).
        Interrupted: SIGINT/SIGTERM stopped the run (completed batches are kept).
    """
    run_dir = Path(cfg.out)
    with directory_lock(run_dir, what="run"):
        return _run_locked(cfg, run_dir, force, on_progress)


def _run_locked(cfg: RunConfig, run_dir: Path, force: bool, on_progress: Progress | None) -> dict:
    from vrp.models.base import adapter_for, read_model_type
    from vrp.models.loading import resolve_model_path
    from vrp.models.supervision import read_supervised_heads

    if force:
        _clear(run_dir)
    model_path = resolve_model_path(cfg.model)
    model_type = read_model_type(model_path)
    family = adapter_for(model_type)  # a bad or unsupported model fails here, before any work
    nli = _check_nli(cfg)  # likewise a missing or non-NLI --nli-model
    loaded, provenance = load_data(cfg.data, run_dir, cfg.seed, cfg.world_images)
    items = loaded.items[: cfg.limit] if cfg.limit else loaded.items
    model_id = model_identity(model_path)  # reads the weights' sampled bytes: once per run
    identity = _identity(cfg, items, model_id)
    if nli is not None:  # the judge's weights decide the semantic clusters (absent: default runs keep their identity)
        identity["nli_model_content_sha256"] = nli["content_sha256"]
    resuming = (run_dir / "manifest.json").exists()
    if resuming:
        _check_resumable(run_dir, identity)
    load_failures = [{"id": f.id, "stage": "load", "source": f.source, "error": f.error} for f in loaded.failures]
    spans = batches(len(items), cfg.batch_size)

    with _log_to(run_dir), _stop_on_signals() as stop:
        storage.recover(run_dir)  # what a crash left: temporary files, debris, superseded shards
        if resuming:
            _compact(cfg, run_dir)
        todo = storage.pending(storage.completed(run_dir), spans)
        started = _now() if not resuming else json.loads((run_dir / "manifest.json").read_text()).get("started", _now())
        manifest = {
            "status": "running", "identity": identity, "config": cfg.to_dict(), "data": provenance,
            "versions": versions(), "seed": cfg.seed, "started": started,
            "model": {"name": cfg.model, "model_type": model_type, "canonical_view": family.canonical_view, **model_id,
                      "supervised_heads": [list(p) for p in read_supervised_heads(model_path)]},
            "counts": {"items_loaded": len(loaded.items), "items": len(items), "batches": len(spans)},
            "semantic_clustering": "canonical" if nli is None else f"nli:{nli['path']}",
        }  # fmt: skip
        if nli is not None:
            manifest["nli_model"] = nli
        atomic_write_json(run_dir / "manifest.json", manifest)
        log.info(
            "%s: %d items in %d batches, %d already committed", run_dir, len(items), len(spans), len(spans) - len(todo)
        )
        t0 = time.time()
        if cfg.engine == "ray":
            from vrp.runs.ray_engine import run_batches_ray

            run_batches_ray(cfg, run_dir, items, todo, spans, stop, on_progress, len(load_failures))
        else:
            _run_local(cfg, run_dir, items, todo, spans, stop, on_progress, len(load_failures))
        return _finish(cfg, run_dir, manifest, spans, load_failures, t0, stop.is_set())


def _compact(cfg: RunConfig, run_dir: Path) -> None:
    before = storage.shard_files(run_dir)
    if storage.compact(run_dir, int(cfg.shard_mb * 1e6), cfg.shard_items):
        log.info("merged shards: %d files -> %d", before, storage.shard_files(run_dir))


def _run_local(cfg, run_dir, items, todo, spans, stop, on_progress, n_load_failed) -> None:
    import torch

    from vrp.models import load_adapter
    from vrp.runs.worker import BatchWorker

    if not todo:
        return
    torch.manual_seed(cfg.seed)
    worker = BatchWorker(load_adapter(cfg.model, dtype=getattr(torch, cfg.dtype), device=cfg.device), cfg)
    n_done = sum(e - s for s, e in spans) - sum(e - s for s, e in todo)
    n_failed = n_load_failed + len(storage.read_failures(run_dir))
    if on_progress:
        on_progress(n_done, len(items), n_failed)
    for start, end in todo:
        if stop.is_set():
            break
        result = worker.run_batch(items[start:end])
        storage.write_shard(run_dir, start, end, result.table, result.tensors, result.failures, result.meta)
        n_done += end - start
        n_failed += len(result.failures)
        if on_progress:
            on_progress(n_done, len(items), n_failed)


def _finish(cfg, run_dir: Path, manifest: dict, spans, load_failures: list[dict], t0: float, interrupted: bool) -> dict:
    n_batches_done = len(spans) - len(storage.pending(storage.completed(run_dir), spans))
    complete = n_batches_done == len(spans)
    if complete:  # an interrupted run stops at once; its shards are merged when it resumes
        _compact(cfg, run_dir)
    table = storage.read_rows(run_dir)
    failures = load_failures + storage.read_failures(run_dir)
    if table is not None:
        write_table(run_dir / "items.parquet", table)
    write_failures(run_dir / "failures.jsonl", failures)
    rows = table.select(["task", "correct"]).to_pylist() if table is not None else []
    shard_bytes = storage.shard_bytes(run_dir)
    manifest.update(
        status="complete" if complete else "interrupted",
        finished=_now(),
        seconds_this_session=round(time.time() - t0, 2),
        accuracy=summarize(rows),
        disk={
            "shard_bytes": shard_bytes,
            "bytes_per_item": round(shard_bytes / len(rows), 1) if rows else None,
            "shard_files": storage.shard_files(run_dir),
            "items_parquet_bytes": (run_dir / "items.parquet").stat().st_size if table is not None else 0,
        },
    )
    manifest["counts"].update(answered=len(rows), failed=len(failures), batches_committed=n_batches_done)
    atomic_write_json(run_dir / "manifest.json", manifest)
    if interrupted and not complete:
        raise Interrupted(
            f"stopped after {n_batches_done} of {manifest['counts']['batches']} batches; "
            f"results so far are in {run_dir}; run the same command again to resume"
        )
    return manifest
