"""``--engine ray``: batches spread over Ray actors, one model replica each.

Each actor loads the model once (one GPU per actor on CUDA, one CPU otherwise), runs the
same :class:`~vrp.runs.worker.BatchWorker` as the local engine on the batches it is given
and commits each batch's shard itself (the driver holds the run directory's lock for them);
the driver only schedules, counts and, at the end, merges the shards by size and writes the
outputs like any run. Resume is therefore identical: committed batches are skipped
whichever engine wrote them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vrp.config import RunConfig
from vrp.data.items import Item

log = logging.getLogger("vrp.run")


class _BatchActor:
    def __init__(self, cfg: dict, run_dir: str):
        import torch

        from vrp.models import load_adapter
        from vrp.runs.worker import BatchWorker

        self.cfg = RunConfig.from_dict(cfg)
        self.run_dir = Path(run_dir)
        torch.manual_seed(self.cfg.seed)
        adapter = load_adapter(self.cfg.model, dtype=getattr(torch, self.cfg.dtype), device=self.cfg.device)
        self.worker = BatchWorker(adapter, self.cfg)

    def process(self, start: int, end: int, items: list[Item]) -> tuple[int, int]:
        from vrp.runs import storage

        result = self.worker.run_batch(items)
        storage.write_shard(self.run_dir, start, end, result.table, result.tensors, result.failures, result.meta)
        return end - start, len(result.failures)


def run_batches_ray(
    cfg: RunConfig,
    run_dir: Path,
    items: list[Item],
    todo: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    stop: threading.Event,
    on_progress,
    n_load_failed: int,
) -> None:
    """Process ``todo`` batches on ``cfg.workers`` Ray actors (starting a local Ray if none runs)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs the ray package: pip install 'vrp[ray]'") from None
    from vrp.runs import storage

    if not todo:
        return
    gpu = cfg.device.startswith("cuda")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            num_cpus=cfg.workers if not gpu else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(_BatchActor)
    actors = [actor_cls.remote(cfg.to_dict(), str(run_dir)) for _ in range(cfg.workers)]
    log.info("ray: %d actors for %d batches", len(actors), len(todo))
    n_done = sum(e - s for s, e in spans) - sum(e - s for s, e in todo)
    n_failed = n_load_failed + len(storage.read_failures(run_dir))
    queue = list(todo)
    pending = {}
    try:
        for actor in actors:
            if queue:
                s, e = queue.pop(0)
                pending[actor.process.remote(s, e, items[s:e])] = actor
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready[0])
            n, f = ray.get(ready[0])
            n_done += n
            n_failed += f
            if on_progress:
                on_progress(n_done, len(items), n_failed)
            if queue and not stop.is_set():
                s, e = queue.pop(0)
                pending[actor.process.remote(s, e, items[s:e])] = actor
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
