"""``intervene``: one experiment on a run directory, written to ``RUN_DIR/interventions/``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vrp.config import RunConfig
from vrp.data.items import Item
from vrp.interventions import experiments as ex
from vrp.interventions.clean import CleanPass, clean_pass
from vrp.interventions.config import InterveneConfig
from vrp.interventions.runner import Answers, Condition, answer, cached_answers, condition_key, save_answers, slug
from vrp.interventions.schema import EFFECTS, EFFECTS_FILE, PATCHING, PATCHING_FILE, SUMMARY_FILE
from vrp.stats.effects import paired_mean_diff, recovered_fraction

log = logging.getLogger(__name__)


def run_items(run_dir: Path, limit: int | None) -> tuple[dict, RunConfig, list[Item], dict[str, bool]]:
    """The run's manifest and config, the items it answered in run order (re-read from its data
    source), and the run's correctness label of each answered item by id."""
    from vrp.data.sources import load_data

    manifest_path = run_dir / "manifest.json"
    if not (run_dir / "items.parquet").is_file() or not manifest_path.is_file():
        raise ValueError(f"{run_dir} holds no finished run (items.parquet / manifest.json missing)")
    manifest = json.loads(manifest_path.read_text())
    cfg = RunConfig.from_dict(manifest["config"])
    answered = pq.read_table(run_dir / "items.parquet", columns=["id", "correct"]).to_pydict()
    loaded, _ = load_data(cfg.data, run_dir, cfg.seed, cfg.world_images)
    by_id = {it.id: it for it in loaded.items}
    missing = [i for i in answered["id"] if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} answered items of {run_dir} are no longer in its data ({missing[:3]} ...)")
    items = [by_id[i] for i in answered["id"]]
    run_correct = dict(zip(answered["id"], answered["correct"], strict=True))
    return manifest, cfg, items[:limit] if limit else items, run_correct


def effect_rows(cfg: InterveneConfig, cond: Condition, clean: Answers, got: Answers, tasks: list[str]) -> list[dict]:
    """Paired accuracy (pp) and margin deltas of one condition, overall and per task."""
    rows = []
    task_arr = np.asarray(tasks)
    for task in ["all", *sorted(set(tasks))]:
        sel = np.ones(len(tasks), bool) if task == "all" else task_arr == task
        acc = paired_mean_diff(clean.correct[sel].astype(float), got.correct[sel].astype(float), cfg.n_boot,
                               seed=cfg.seed)  # fmt: skip
        mar = paired_mean_diff(clean.margin[sel], got.margin[sel], cfg.n_boot, seed=cfg.seed)
        rows.append({
            "experiment": cfg.experiment, "kind": cond.kind, "condition": cond.label, "layer": cond.layer,
            "control": cond.control, "task": task, "n": int(sel.sum()),
            "acc_clean": float(clean.correct[sel].mean()), "acc_intervened": float(got.correct[sel].mean()),
            "delta_pp": 100 * acc.estimate, "delta_ci_low": 100 * acc.ci_low, "delta_ci_high": 100 * acc.ci_high,
            "margin_delta": mar.estimate, "margin_ci_low": mar.ci_low, "margin_ci_high": mar.ci_high,
        })  # fmt: skip
    return rows


def _merge(path: Path, schema: pa.Schema, experiment: str, rows: list[dict]) -> None:
    from vrp.runs.rundir import write_table

    new = pa.Table.from_pylist(rows, schema=schema)
    if path.is_file():
        old = pq.read_table(path).cast(schema)
        old = old.filter(pc.not_equal(old["experiment"], experiment))
        new = pa.concat_tables([old, new])
    write_table(path, new)


def _conditions(cfg: InterveneConfig, clean: CleanPass, adapter, run_dir: Path, ids: list[str]) -> list[Condition]:
    if cfg.kind == "neurons":
        return ex.neuron_conditions(cfg, clean, adapter, run_dir)
    if cfg.kind == "mass":
        return ex.mass_conditions(cfg, clean, adapter, run_dir)
    if cfg.kind == "mlp":
        return ex.mlp_conditions(cfg, adapter)
    if cfg.kind == "heads":
        return ex.head_conditions(cfg, adapter)
    return ex.patch_conditions(cfg, clean, adapter, ids)


def intervene(
    run_dir: str | Path, cfg: InterveneConfig, progress: Callable[[int, int, str], None] | None = None
) -> dict:
    """Run one experiment on a run's items and write its rows to ``RUN_DIR/interventions/``.

    Returns the experiment's entry of ``interventions/summary.json``.
    """
    import torch

    from vrp.models import load_adapter

    run_dir = Path(run_dir)
    manifest, rcfg, items, run_correct = run_items(run_dir, cfg.limit)
    adapter = load_adapter(rcfg.model, dtype=getattr(torch, rcfg.dtype), device=rcfg.device)
    n, ids, tasks = len(items), [it.id for it in items], [it.task for it in items]
    out_dir = run_dir / "interventions"
    exp_dir = out_dir / slug(cfg.experiment)
    done = [0]

    def tick_for(label: str, total: int):
        def tick(k: int) -> None:
            done[0] += k
            if progress:
                progress(done[0], total, label)

        return tick

    needs_map = cfg.kind == "patches" or (cfg.kind == "patching" and cfg.corruption == "top")
    clean = clean_pass(adapter, items, rcfg.max_new_tokens, cfg.batch_size,
                       map_layer=cfg.map_layer if needs_map else None, aggregation=cfg.aggregation,
                       unit_stats=cfg.mode == "clamp" and cfg.kind in ("neurons", "mass"),
                       tick=tick_for("clean pass", n))  # fmt: skip
    agree = float(np.mean([run_correct[i] == c for i, c in zip(ids, clean.answers.correct, strict=True)]))
    if agree < 1.0:
        log.warning("the clean pass agrees with the run's correctness labels on %.1f%% of items", 100 * agree)
    entry = {"kind": cfg.kind, "config": cfg.to_dict(), "n_items": n, "clean_accuracy": float(clean.answers.correct.mean()),
             "clean_agreement_with_run": agree, "conditions": []}  # fmt: skip
    if cfg.kind == "patching":
        _patching(cfg, clean, adapter, items, out_dir, entry, tick_for)
    else:
        conds = _conditions(cfg, clean, adapter, run_dir, ids)
        done[0] = 0
        rows = []
        for cond in conds:
            key = condition_key(cfg, cond, manifest["identity"])
            path = exp_dir / f"{slug(cond.label)}.parquet"
            tick = tick_for(cond.label, n * len(conds))
            got = cached_answers(path, key, n)
            if got is None:
                got = answer(adapter, items, cond, rcfg.max_new_tokens, cfg.batch_size, tick=tick)
                save_answers(path, key, cond.label, got)
            else:
                tick(n)
            rows += effect_rows(cfg, cond, clean.answers, got, tasks)
            entry["conditions"].append({"label": cond.label, "layer": cond.layer, "control": cond.control,
                                        "file": str(path.relative_to(run_dir)),
                                        **({"units": cond.spec["units"], "site": cond.spec["site"]}
                                           if cond.kind == "neurons" else {})})  # fmt: skip
        _merge(out_dir / EFFECTS_FILE, EFFECTS, cfg.experiment, rows)
    _write_summary(out_dir, cfg.experiment, entry)
    return entry


def _patching(cfg, clean: CleanPass, adapter, items, out_dir: Path, entry: dict, tick_for) -> None:
    from vrp.interventions.patching import patch_margins

    n_layers = adapter.n_blocks
    layers = ex.resolve_layers(cfg.layers, n_layers, list(range(n_layers)))
    sites = {cfg.site_name(s, i): (s, i) for s in cfg.patch_sites for i in layers}  # site name -> (kind, block)
    cells = ex.item_cells(cfg, clean, [it.id for it in items], cfg.corruption)
    what = "all patches" if cfg.corruption == "all" else f"{cfg.corruption} {cfg.frac:.0%} patches"
    label = f"{what} (pixel, {cfg.fill}); restored at {cfg.patch_positions} positions"
    m_clean, m_corrupt, patched = patch_margins(
        adapter, items, lambda b: ex.masked_images(cfg, clean, cells, b), list(sites), cfg.batch_size,
        last_only=cfg.patch_positions == "last", tick=tick_for("patching", len(items)),
    )  # fmt: skip
    rows = []
    for name, m in patched.items():
        site, layer = sites[name]
        r = recovered_fraction(m_clean, m_corrupt, m, cfg.n_boot, seed=cfg.seed)
        rows.append({"experiment": cfg.experiment, "corruption": label, "site": site, "layer": layer, "n": r.n,
                     "recovered": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high})  # fmt: skip
    _merge(out_dir / PATCHING_FILE, PATCHING, cfg.experiment, rows)
    gap = paired_mean_diff(m_clean, m_corrupt, cfg.n_boot, seed=cfg.seed)
    entry["corruption"] = {"label": label, "margin_delta": gap.estimate, "ci": [gap.ci_low, gap.ci_high]}
    entry["conditions"] = [{"label": f"restore {s} L{i}", "layer": i, "control": False} for s, i in sites.values()]


def _write_summary(out_dir: Path, experiment: str, entry: dict) -> None:
    from vrp.runs.rundir import atomic_write_json

    path = out_dir / SUMMARY_FILE
    summary = json.loads(path.read_text()) if path.is_file() else {"experiments": {}}
    summary["experiments"][experiment] = entry
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, summary)
