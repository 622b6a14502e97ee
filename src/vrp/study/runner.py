"""``vrp study``: every (model, dataset) pair of a study as an ordinary run directory, then the
study tables.

A study directory holds ``study.json`` (the resolved spec), ``runs/<model>__<data>__<hash>/``
(one run directory per pair: resumable exactly like ``vrp run``), ``tables/`` (the study's
tables) and, written by :func:`vrp.report.study.build_study_report`, ``report/`` and
``summary.json``. A pair is the unit of work: with ``engine = "ray"`` the pairs spread over Ray
workers, one model replica each. Running the same command again skips the pairs whose run,
probes and analysis are finished and resumes the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.config import RunConfig
from vrp.runs.rundir import atomic_write_json, versions
from vrp.study.config import StudyConfig

log = logging.getLogger("vrp.study")
Events = Callable[[str, dict], None]  # (event, details): "run", "skip", "done", "failed", "intervene", "tables"


def finished(run_cfg: RunConfig) -> bool:
    """Whether a pair's run, probes and analysis are done with this very config (so the study
    skips it without loading its model)."""
    run_dir = Path(run_cfg.out)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    same = {k: v for k, v in manifest.get("config", {}).items() if k not in RunConfig.OPERATIONAL} == {
        k: v for k, v in run_cfg.to_dict().items() if k not in RunConfig.OPERATIONAL
    }
    stages = [run_dir / "items.parquet", run_dir / "probes" / "summary.json", run_dir / "analysis" / "summary.json"]
    if not (same and manifest.get("status") == "complete" and all(p.is_file() for p in stages[:1])):
        return False
    skipped = (run_dir / "probes" / "skipped.json").is_file()  # probes impossible (one class): not owed
    return (skipped or stages[1].is_file()) and stages[2].is_file()


def process_pair(run_cfg: RunConfig, probe_cfg: ProbeConfig, analyze_cfg: AnalyzeConfig) -> dict:
    """Run (or resume) one pair, then its probes and its predictor analysis. Returns the
    run's manifest. A run whose labels have one class only gets no probes (recorded in
    ``probes/skipped.json``); the rest of the analysis still runs."""
    from vrp.runs.lock import directory_lock

    with directory_lock(run_cfg.out, what="study"):  # the run, its probes and its analysis: one writer
        return _process_pair(run_cfg, probe_cfg, analyze_cfg)


def _process_pair(run_cfg: RunConfig, probe_cfg: ProbeConfig, analyze_cfg: AnalyzeConfig) -> dict:
    from vrp.analysis.predictors import analyze
    from vrp.analysis.probing import train_probes
    from vrp.runs.pipeline import run

    manifest = run(run_cfg)
    run_dir = Path(run_cfg.out)
    if manifest["counts"]["answered"] == 0:
        raise RuntimeError(f"{run_dir}: no item was answered (see {run_dir / 'failures.jsonl'})")
    try:
        train_probes(run_dir, probe_cfg)
        (run_dir / "probes" / "skipped.json").unlink(missing_ok=True)
    except ValueError as e:  # e.g. every answer right (or wrong): nothing to separate
        log.warning("%s: probes skipped: %s", run_dir, e)
        (run_dir / "probes").mkdir(exist_ok=True)
        atomic_write_json(run_dir / "probes" / "skipped.json", {"reason": str(e)})
    analyze(run_dir, analyze_cfg)
    return manifest


def _pair_on_ray(run_cfg: dict, probe_cfg: dict, analyze_cfg: dict) -> dict:  # runs in a Ray worker
    import torch

    torch.set_num_threads(1)
    return process_pair(RunConfig.from_dict(run_cfg), ProbeConfig.from_dict(probe_cfg),
                        AnalyzeConfig.from_dict(analyze_cfg))  # fmt: skip


def _run_pairs_ray(cfg: StudyConfig, todo: list[RunConfig], probe_cfg, analyze_cfg, events: Events) -> dict:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs the ray package: pip install 'vrp[ray]'") from None
    if not ray.is_initialized():
        ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False)
    gpus = 1 if cfg.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(_pair_on_ray)
    pending = {task.remote(r.to_dict(), probe_cfg.to_dict(), analyze_cfg.to_dict()): r for r in todo}
    failed = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        r = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except Exception as e:  # the pair's error is reported; the other pairs go on
            cause = getattr(e, "cause", None) or e
            failed[r.out] = f"{type(cause).__name__}: {cause}"
            events("failed", {"run_dir": r.out, "error": failed[r.out]})
            continue
        events("done", {"run_dir": r.out})
    return failed


def run_study(cfg: StudyConfig, out: str | Path, events: Events | None = None) -> dict:
    """Run every pair of the study (skipping finished ones), its interventions, and write the
    study tables. Returns the resolved spec written to ``study.json``.

    Raises:
        vrp.runs.lock.DirectoryLockedError: another process is running a study in ``out``.
    """
    from vrp.runs.lock import directory_lock

    events = events or (lambda event, details: None)
    out = Path(out)
    with directory_lock(out, what="study"):  # one study process per directory
        return _run_study(cfg, out, events)


def _run_study(cfg: StudyConfig, out: Path, events: Events) -> dict:
    from vrp.runs.lock import DirectoryLockedError
    from vrp.runs.pipeline import Interrupted
    from vrp.study.tables import write_tables

    probe_cfg, analyze_cfg = ProbeConfig(seed=cfg.seed), cfg.analyze_config()
    runs = [cfg.run_config(m, d, out) for m, d in cfg.pairs()]
    spec = {
        "study": cfg.to_dict(),
        "runs": [{"model": r.model, "data": r.data, "run_dir": str(Path(r.out).relative_to(out))} for r in runs],
        "probe_config": probe_cfg.to_dict(),
        "analyze_config": analyze_cfg.to_dict(),
        "versions": versions(),
    }
    atomic_write_json(out / "study.json", spec)
    todo = []
    for r in runs:
        if finished(r):
            events("skip", {"run_dir": r.out})
        else:
            todo.append(r)
    failed: dict[str, str] = {}
    if cfg.engine == "ray" and todo:
        failed = _run_pairs_ray(cfg, todo, probe_cfg, analyze_cfg, events)
    else:
        for r in todo:
            events("run", {"run_dir": r.out, "model": r.model, "data": r.data})
            try:
                process_pair(r, probe_cfg, analyze_cfg)
            except (Interrupted, DirectoryLockedError):
                raise
            except Exception as e:  # the pair's error is reported; the other pairs go on
                failed[r.out] = f"{type(e).__name__}: {e}"
                log.warning("%s failed: %s", r.out, failed[r.out])
                events("failed", {"run_dir": r.out, "error": failed[r.out]})
                continue
            events("done", {"run_dir": r.out})
    atomic_write_json(out / "failures.json", {str(Path(k).relative_to(out)): v for k, v in failed.items()})
    for kind in cfg.intervene:
        _intervene(cfg, kind, [r for r in runs if r.out not in failed], events)
    events("tables", {"study_dir": str(out)})
    write_tables(out)
    if failed:
        raise StudyIncomplete(out, failed)
    return spec


class StudyIncomplete(RuntimeError):
    """Some pairs of the study failed; the others, the tables and the report are written.

    Attributes:
        failed: run directory -> the error (also in ``STUDY_DIR/failures.json``).
    """

    def __init__(self, out: Path, failed: dict[str, str]):
        self.failed = failed
        lines = "\n".join(f"  {Path(k).name}: {v}" for k, v in failed.items())
        super().__init__(f"{len(failed)} run(s) of the study in {out} failed (the rest are done and in the "
                         f"tables; fix the cause and rerun the same command to finish):\n{lines}")  # fmt: skip


def _intervene(cfg: StudyConfig, kind: str, runs: list[RunConfig], events: Events) -> None:
    """``vrp intervene --kind KIND`` on every run (finished conditions are reused on a rerun)."""
    from vrp.interventions import intervene
    from vrp.interventions.config import InterveneConfig

    icfg = InterveneConfig(kind=kind, seed=cfg.seed, n_boot=cfg.n_boot, limit=cfg.intervene_limit)
    for r in runs:
        if kind in ("neurons", "mass") and (Path(r.out) / "probes" / "skipped.json").is_file():
            log.warning("%s: no probes, so no %s intervention", r.out, kind)
            continue
        events("intervene", {"run_dir": r.out, "kind": kind})
        intervene(r.out, icfg)
