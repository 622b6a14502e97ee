"""The ``vrp`` command line: a thin layer over config objects and pipeline functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.analysis.lens_config import LensConfig
from vrp.config import RunConfig, field_default, field_help
from vrp.interventions.config import InterveneConfig
from vrp.monitor.config import ExportConfig
from vrp.report.config import ReportConfig
from vrp.serve.config import ServeConfig
from vrp.toys.config import TrainConfig
from vrp.world.dataset import STRATEGY
from vrp.world.scene import WorldConfig

app = typer.Typer(
    help="VLM Reliability Probe: where reliability lives inside a vision-language model.", no_args_is_help=True
)
world_app = typer.Typer(
    help="The synthetic ShapesWorld benchmark and the toy VLMs trained on it.", no_args_is_help=True
)
app.add_typer(world_app, name="world")
monitor_app = typer.Typer(help="Reliability monitors: a run's probe packaged for a live model.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
lens_app = typer.Typer(help="Lenses over a run's stored residuals: the tuned lens.", no_args_is_help=True)
app.add_typer(lens_app, name="lens")
console = Console(stderr=True)


def _opt(cls: type, name: str, *decls: str, help: str | None = None, **kw: Any) -> Any:
    """A typer option whose default (and help, unless given) is field ``name`` of the config
    dataclass ``cls``: the one source of every default. Tuple defaults show as comma lists."""
    default = field_default(cls, name)
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default)
    return typer.Option(default, *decls, help=help or field_help(cls)[name], **kw)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}", soft_wrap=True)
    raise typer.Exit(code)


def _config(cls: type, **values: Any) -> Any:
    """Build the config dataclass ``cls``; an invalid value is an error line, not a traceback."""
    from vrp.config import ConfigError

    try:
        return cls(**values)
    except ConfigError as e:
        _fail(str(e))


def _stdout() -> Console:
    """Tables go to stdout; redirected to a file or a pipe they keep their full width."""
    out = Console()
    return out if out.is_terminal else Console(width=160)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("failures: {task.fields[failures]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _print_accuracy(summary: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("task", "n", "accuracy", "95% CI (Wilson)"):
        table.add_column(col, justify="right" if col != "task" else "left")
    rows = [*summary["by_task"].items(), ("all", summary["overall"])]
    for task, a in rows:
        lo, hi = a["ci95"]
        table.add_row(task, str(a["n"]), f"{a['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]")
    _stdout().print(table)


@app.command()
def run(
    model: str = _opt(RunConfig, "model"),
    data: str = _opt(RunConfig, "data"),
    out: Path = _opt(RunConfig, "out"),
    limit: int | None = _opt(RunConfig, "limit"),
    seed: int = _opt(RunConfig, "seed"),
    batch_size: int = _opt(RunConfig, "batch_size"),
    max_new_tokens: int = _opt(RunConfig, "max_new_tokens"),
    device: str = _opt(RunConfig, "device"),
    dtype: str = _opt(RunConfig, "dtype"),
    world_images: int = _opt(RunConfig, "world_images"),
    samples: int = _opt(RunConfig, "samples"),
    temperature: float = _opt(RunConfig, "temperature"),
    top_p: float = _opt(RunConfig, "top_p"),
    rho: float = _opt(RunConfig, "rho"),
    rho_rule: str = _opt(RunConfig, "rho_rule"),
    store_layers: str = _opt(RunConfig, "store_layers"),
    store_attention: str = _opt(RunConfig, "store_attention"),
    residuals: bool = _opt(RunConfig, "store_residuals", "--residuals/--no-residuals"),
    engine: str = _opt(RunConfig, "engine"),
    workers: int = _opt(RunConfig, "workers"),
    shard_mb: float = _opt(RunConfig, "shard_mb"),
    shard_items: int = _opt(RunConfig, "shard_items"),
    nli_model: str | None = _opt(RunConfig, "nli_model"),
    force: bool = typer.Option(False, "--force", help="Discard what the run directory holds and start over."),
    analysis: bool = typer.Option(
        True, "--analysis/--answer-only", help="After answering: probes, predictor table and report (default)."
    ),
) -> None:
    """Answer and measure every item, then train the probes, analyze and write the report.

    Each later stage is also its own command (`vrp probe`, `vrp analyze`, `vrp report`) for
    re-analysis of an existing run; `--answer-only` stops after the run directory is written.
    """
    from vrp.config import ConfigError
    from vrp.runs.lock import DirectoryLockedError, directory_lock

    try:
        cfg = RunConfig(
            model=model, data=data, out=str(out), limit=limit, seed=seed, batch_size=batch_size,
            max_new_tokens=max_new_tokens, device=device, dtype=dtype, world_images=world_images,
            samples=samples, temperature=temperature, top_p=top_p, rho=rho, rho_rule=rho_rule,
            store_layers=store_layers, store_attention=store_attention, store_residuals=residuals,
            engine=engine, workers=workers, shard_mb=shard_mb, shard_items=shard_items, nli_model=nli_model,
        )  # fmt: skip
    except ConfigError as e:
        _fail(str(e))
    try:
        lock = directory_lock(out, what="run")
        lock.__enter__()  # held through the probes, analysis and report too (one writer per directory)
    except DirectoryLockedError as e:  # another process is writing this run directory
        _fail(str(e))
    try:
        _run_stages(cfg, force, analysis)
    finally:
        lock.__exit__(None, None, None)


def _run_stages(cfg: RunConfig, force: bool, analysis: bool) -> None:
    from vrp.config import ConfigError
    from vrp.data.sources import DataSpecError
    from vrp.models import NotAModelError, UnsupportedModelError
    from vrp.runs.pipeline import Interrupted, RunExistsError
    from vrp.runs.pipeline import run as run_pipeline

    out, seed = Path(cfg.out), cfg.seed
    with _progress() as prog:
        task = prog.add_task("answering", total=None, rate="", failures=0)

        def on_progress(done: int, total: int, failures: int) -> None:
            el = prog.tasks[task].elapsed or 1e-9
            prog.update(task, completed=done, total=total, failures=failures, rate=f"{done / el:.1f} items/s")

        try:
            manifest = run_pipeline(cfg, force=force, on_progress=on_progress)
        except (UnsupportedModelError, NotAModelError, DataSpecError, RunExistsError, FileNotFoundError) as e:
            _fail(str(e))
        except ConfigError as e:
            _fail(str(e))
        except Interrupted as e:
            _fail(str(e), code=130)
    c = manifest["counts"]
    _print_accuracy(manifest["accuracy"], f"{manifest['model']['name']} on {manifest['data']['format']}")
    per_item = manifest["disk"]["bytes_per_item"]
    console.print(
        f"answered {c['answered']}, failed {c['failed']} (see {out / 'failures.jsonl'}); "
        f"shards {manifest['disk']['shard_bytes'] / 1e6:.1f} MB"
        + (f" ({per_item / 1e3:.1f} kB per item)" if per_item else "")
        + f"; wrote {out}",
        soft_wrap=True,
    )
    if not analysis:
        return
    if c["answered"] == 0:
        _fail("no item was answered: nothing to analyze")
    try:
        _train_probes(out, ProbeConfig(seed=seed))
    except (ValueError, KeyError) as e:  # e.g. one class only: the rest of the analysis still runs
        console.print(f"[yellow]probes skipped:[/] {e}", soft_wrap=True)
    _analyze(out, AnalyzeConfig(seed=seed))  # AnalyzeConfig's defaults, as `vrp analyze`
    _report(out, ReportConfig())


def _check_run_dir(run: Path) -> None:
    if not (run / "items.parquet").is_file():
        _fail(f"{run} holds no finished run (no items.parquet); make one with `vrp run --out {run}`")


def _report(run: Path, cfg: ReportConfig) -> Path:
    """Build the report and say where it is."""
    from vrp.report import build_report

    with console.status("building the report"):
        try:
            path = build_report(run, layer=cfg.layer, n_cases=cfg.n_cases)
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
    console.print(f"wrote {path} and {run / 'summary.json'}; open it in a browser", soft_wrap=True)
    return path


def _numbers(spec: str | None, what: str, kind: type) -> tuple | None:
    """A comma list of numbers of ``kind`` (None stays None: the config's default)."""
    if spec is None:
        return None
    try:
        return tuple(kind(x) for x in spec.split(",") if x.strip())
    except ValueError:
        _fail(f"{what} must be comma-separated {kind.__name__}s, got {spec!r}")


def _ints(spec: str | None, what: str) -> tuple[int, ...] | None:
    return _numbers(spec, what, int)


def _floats(spec: str | None, what: str) -> tuple[float, ...] | None:
    return _numbers(spec, what, float)


@app.command()
def intervene(
    run: Path = typer.Option(
        ..., "--run", help="A run directory written by `vrp run` (neurons/mass need `vrp probe`)."
    ),
    kind: str = typer.Option(..., help="neurons, mass, mlp, heads, patches or patching."),
    name: str = _opt(InterveneConfig, "name"),
    layers: str = _opt(InterveneConfig, "layers", help="decoder blocks, e.g. '1,3' or '-1' (default: the kind's)."),
    k: int = _opt(InterveneConfig, "k"),
    site: str = _opt(InterveneConfig, "site"),
    mode: str = _opt(InterveneConfig, "mode"),
    clamp_scale: float = _opt(InterveneConfig, "clamp_scale"),
    sizes: str = _opt(
        InterveneConfig, "sizes", help="mass: unit counts (>=1) or width fractions (<1), e.g. 500,1000,2000."
    ),
    heads: str = _opt(InterveneConfig, "heads", help="heads: which heads (default: each head of each layer)."),
    frac: float = _opt(InterveneConfig, "frac"),
    map_layer: int = _opt(InterveneConfig, "map_layer"),
    aggregation: str = _opt(InterveneConfig, "aggregation"),
    space: str = _opt(InterveneConfig, "space"),
    fill: str = _opt(InterveneConfig, "fill"),
    corruption: str = _opt(InterveneConfig, "corruption"),
    sites: str = _opt(InterveneConfig, "patch_sites", "--sites"),
    positions: str = _opt(InterveneConfig, "patch_positions", "--positions"),
    seed: int = _opt(InterveneConfig, "seed"),
    n_boot: int = _opt(InterveneConfig, "n_boot"),
    batch_size: int = _opt(InterveneConfig, "batch_size"),
    limit: int | None = _opt(InterveneConfig, "limit"),
) -> None:
    """Re-answer a run's items under an intervention: paired accuracy and margin deltas with CIs."""
    from vrp.interventions import intervene as run_intervention

    _check_run_dir(run)
    cfg = _config(
        InterveneConfig,
        kind=kind, name=name, layers=_ints(layers, "--layers"), k=k, site=site, mode=mode,
        clamp_scale=clamp_scale, sizes=_floats(sizes, "--sizes"),
        heads=_ints(heads, "--heads"), frac=frac, map_layer=map_layer, aggregation=aggregation, space=space,
        fill=fill, corruption=corruption, patch_sites=tuple(s.strip() for s in sites.split(",") if s.strip()),
        patch_positions=positions,
        seed=seed, n_boot=n_boot, batch_size=batch_size, limit=limit,
    )  # fmt: skip
    with _progress() as prog:
        task = prog.add_task(f"{kind}", total=None, rate="", failures=0)

        def on_progress(done: int, total: int, label: str) -> None:
            prog.update(task, completed=done, total=total, description=f"{kind}: {label}")

        try:
            entry = run_intervention(run, cfg, on_progress)
        except ValueError as e:
            _fail(str(e))
    _print_interventions(run, cfg.experiment, entry)


def _print_interventions(run: Path, experiment: str, entry: dict) -> None:
    import pyarrow.parquet as pq

    out = run / "interventions"
    console.print(
        f"clean pass: accuracy {entry['clean_accuracy']:.3f} on {entry['n_items']} items "
        f"(agrees with the run's labels on {entry['clean_agreement_with_run']:.1%})",
        soft_wrap=True,
    )
    if entry["kind"] == "patching":
        t = pq.read_table(out / "patching.parquet").to_pandas()
        t = t[t.experiment == experiment]
        c = entry["corruption"]
        table = Table(title=f"activation patching: {c['label']} moves the margin by {c['margin_delta']:+.3f} "
                            f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]; fraction recovered by restoring")  # fmt: skip
        for col in ("site", "layer", "recovered [95% CI]", "n"):
            table.add_column(col, justify="right" if col != "site" else "left")
        for r in t.itertuples():
            table.add_row(r.site, str(r.layer), f"{r.recovered:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", str(r.n))
    else:
        t = pq.read_table(out / "effects.parquet").to_pandas()
        t = t[t.experiment == experiment]
        table = Table(title=f"{experiment} on {run}: paired change vs the clean pass (95% paired-bootstrap CI)")
        for col in ("condition", "task", "n", "acc clean", "acc", "delta (pp)", "margin delta"):
            table.add_column(col, justify="left" if col in ("condition", "task") else "right")
        for r in t.itertuples():
            table.add_row(
                r.condition + (" (control)" if r.control else ""), r.task, str(r.n), f"{r.acc_clean:.3f}",
                f"{r.acc_intervened:.3f}", f"{r.delta_pp:+.1f} [{r.delta_ci_low:+.1f}, {r.delta_ci_high:+.1f}]",
                f"{r.margin_delta:+.3f} [{r.margin_ci_low:+.3f}, {r.margin_ci_high:+.3f}]",
            )  # fmt: skip
    _stdout().print(table)
    console.print(f"wrote {out}", soft_wrap=True)


@app.command()
def probe(
    run: Path = typer.Option(..., "--run", help="A run directory written by `vrp run`."),
    seed: int = _opt(ProbeConfig, "seed"),
    stacked_k: int = _opt(ProbeConfig, "stacked_k"),
) -> None:
    """Train the reliability probes (dense, sparse, stacked, MLP, attention ensembles) on a run."""
    _check_run_dir(run)
    cfg = _config(ProbeConfig, seed=seed, stacked_k=stacked_k)
    try:
        _train_probes(run, cfg)
    except (ValueError, KeyError) as e:
        _fail(str(e))


def _train_probes(run: Path, cfg: ProbeConfig) -> None:
    """Train the probes and print their table."""
    from vrp.analysis.probing import train_probes

    with console.status("training probes"):
        summary = train_probes(run, cfg)
    table = Table(title=f"probes on {run} (n = {summary['n']}, split {summary['split_sizes']})")
    for col in ("probe", "chosen on validation", "val AUROC", "test AUROC"):
        table.add_column(col, justify="left" if col in ("probe", "chosen on validation") else "right")
    for name, e in summary["probes"].items():
        chosen = ", ".join(f"{k}={e[k]}" for k in ("residual_layer", "C", "k", "layer_index") if k in e)
        table.add_row(name, chosen, f"{e['val_auroc']:.3f}", f"{e['test_auroc']:.3f}")
    _stdout().print(table)
    head = summary.get("consistency_head") or {}
    if "skipped" in head:
        console.print(f"[yellow]consistency head skipped:[/] {head['skipped']}", soft_wrap=True)
    elif head:
        console.print(
            f"consistency head (S_SC from the residual, K = {head['samples']}): residual layer {head['residual_layer']}, "
            f"C = {head['C']}, chosen on validation MSE; test MSE {head['test_mse']:.4f}, R^2 {head['test_r2']:.3f}",
            soft_wrap=True,
        )
    console.print(f"wrote {run / 'probes'}; test AUROCs with CIs: `vrp analyze --run {run}`", soft_wrap=True)


@app.command()
def analyze(
    run: Path = typer.Option(..., "--run", help="A run directory written by `vrp run` (and `vrp probe`)."),
    n_boot: int = _opt(AnalyzeConfig, "n_boot"),
    n_perm: int = _opt(AnalyzeConfig, "n_perm"),
    seed: int = _opt(AnalyzeConfig, "seed"),
    units_top: int = _opt(AnalyzeConfig, "units_top"),
    units_layers: str = _opt(
        AnalyzeConfig,
        "units_layers",
        help="residual layers listed besides the sparse probe's chosen one in analysis/units.parquet, e.g. '8,-1'.",
    ),
    detach_focus_quantile: float = _opt(AnalyzeConfig, "detach_focus_quantile"),
    detach_entropy_quantile: float = _opt(AnalyzeConfig, "detach_entropy_quantile"),
    detach_miss_quantile: float = _opt(AnalyzeConfig, "detach_miss_quantile"),
    detach_miss_rule: str = _opt(AnalyzeConfig, "detach_miss_rule"),
    detach_block: int | None = _opt(AnalyzeConfig, "detach_block"),
) -> None:
    """Which signals predict correctness: AUROC with 95% CIs, p-values (Bonferroni, BH), AURC, ECE."""
    _check_run_dir(run)
    _analyze(run, _config(AnalyzeConfig, n_boot=n_boot, n_perm=n_perm, seed=seed, units_top=units_top,
                          units_layers=_ints(units_layers, "--units-layers"),
                          detach_focus_quantile=detach_focus_quantile, detach_entropy_quantile=detach_entropy_quantile,
                          detach_miss_quantile=detach_miss_quantile, detach_miss_rule=detach_miss_rule,
                          detach_block=detach_block))  # fmt: skip


def _analyze(run: Path, cfg: AnalyzeConfig) -> None:
    """Run the predictor analysis and print its table."""
    from vrp.analysis.predictors import analyze as run_analysis
    from vrp.signals.catalog import NEEDS_NOTE

    with console.status("bootstrapping"):
        summary = run_analysis(run, cfg)
    table = Table(title=f"predictors of correctness on {run}")
    for col in ("signal", "family", "needs", "AUROC [95% CI]", "r", "p", "p (BH)", "AURC", "n"):
        table.add_column(col, justify="left" if col in ("signal", "family", "needs") else "right")

    def f(x, fmt=".3f"):
        return "undefined" if x is None or x != x else format(x, fmt)

    for r in summary["predictors"]:
        auc = f"{f(r['auroc'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]" if not r["undefined"] else "undefined"
        table.add_row(r["name"], r["family"], r["needs"], auc, f(r["r"], "+.3f"), f(r["p"], ".4f"),
                      f(r["p_bh"], ".4f"), f(r["aurc"]), str(r["n"]))  # fmt: skip
    _stdout().print(table)
    undefined = [f"{r['name']}: {r['undefined']}" for r in summary["predictors"] if r["undefined"]]
    if undefined:
        console.print("undefined: " + "; ".join(undefined), soft_wrap=True)
    if summary.get("consistency"):
        from vrp.analysis.consistency import describe

        console.print(describe(summary["consistency"]), soft_wrap=True)
    from vrp.analysis import detachment, units  # the sparse-circuit and symbolic-detachment views, one line each

    for view, entry in ((units, summary.get("units")), (detachment, summary.get("detachment"))):
        if entry:
            console.print(view.describe(entry), soft_wrap=True)
    console.print(
        "AUROC oriented by each signal's documented direction (0.5 = chance); probe rows on the probes' test split. "
        f"{NEEDS_NOTE} Wrote {run / 'analysis'}",
        soft_wrap=True,
    )


@app.command()
def report(
    run: Path = typer.Option(..., "--run", help="A run directory written by `vrp run` (and probe, analyze)."),
    layer: int | None = _opt(ReportConfig, "layer"),
    cases: int = _opt(ReportConfig, "n_cases", "--cases"),
) -> None:
    """Build the offline HTML report (RUN_DIR/report/index.html) and RUN_DIR/summary.json; no model is loaded."""
    _check_run_dir(run)
    path = _report(run, _config(ReportConfig, layer=layer, n_cases=cases))
    typer.echo(str(path))


def _spec_opt(name: str, *decls: str, **kw: Any) -> Any:
    """A ``vrp study`` option that overrides the spec file only when given (default None; the
    help shows StudyConfig's default)."""
    from vrp.study.config import StudyConfig

    default = field_default(StudyConfig, name)
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default) or "none"
    return typer.Option(None, *decls, help=f"{field_help(StudyConfig)[name]} [default: {default}]", **kw)


@app.command()
def study(
    out: Path = typer.Option(..., "--out", help="The study directory (created; rerun the same command to resume)."),
    spec: Path | None = typer.Option(
        None,
        "--spec",
        help="A TOML study spec (keys: the options below, "
        "models = [...], datasets = [...]); options given here win over it.",
    ),
    models: list[str] | None = _spec_opt("models", "--model", "-m"),
    datasets: list[str] | None = _spec_opt("datasets", "--data", "-d"),
    samples: int | None = _spec_opt("samples"),
    seed: int | None = _spec_opt("seed"),
    limit: int | None = _spec_opt("limit"),
    world_images: int | None = _spec_opt("world_images"),
    store_layers: str | None = _spec_opt("store_layers"),
    batch_size: int | None = _spec_opt("batch_size"),
    max_new_tokens: int | None = _spec_opt("max_new_tokens"),
    device: str | None = _spec_opt("device"),
    dtype: str | None = _spec_opt("dtype"),
    intervene: list[str] | None = _spec_opt("intervene", "--intervene"),
    intervene_limit: int | None = _spec_opt("intervene_limit"),
    engine: str | None = _spec_opt("engine"),
    workers: int | None = _spec_opt("workers"),
    n_boot: int | None = _spec_opt("n_boot"),
    n_perm: int | None = _spec_opt("n_perm"),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the study report (and each run's)."),
) -> None:
    """Every model on every dataset (one run directory each, resumable), then the study's tables
    (STUDY_DIR/tables: Parquet, CSV, LaTeX), summary.json and report/index.html.

    With no --spec, --model or --data: the three shipped toys on a fresh ShapesWorld set.
    """
    from vrp.config import ConfigError
    from vrp.data.sources import DataSpecError
    from vrp.models import NotAModelError, UnsupportedModelError
    from vrp.runs.lock import DirectoryLockedError
    from vrp.runs.pipeline import Interrupted
    from vrp.study.config import StudyConfig
    from vrp.study.runner import StudyIncomplete, run_study

    given = dict(models=tuple(models) if models else None, datasets=tuple(datasets) if datasets else None,
                 samples=samples, seed=seed, limit=limit, world_images=world_images, store_layers=store_layers,
                 batch_size=batch_size, max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                 intervene=tuple(intervene) if intervene else None, intervene_limit=intervene_limit, engine=engine, workers=workers, n_boot=n_boot,
                 n_perm=n_perm)  # fmt: skip
    try:
        if spec is not None:
            cfg = StudyConfig.from_toml(spec, **given)
        else:
            cfg = StudyConfig(**{k: v for k, v in given.items() if v is not None})
    except ConfigError as e:
        _fail(str(e))

    def on_event(event: str, d: dict) -> None:
        where = Path(d.get("run_dir", "")).name
        messages = {"skip": f"{where}: finished, skipped", "run": f"{where}: running {d.get('model')} on "
                    f"{d.get('data')}", "done": f"{where}: done", "intervene": f"{where}: vrp intervene --kind "
                    f"{d.get('kind')}", "tables": "the study tables",
                    "failed": f"{where}: FAILED: {d.get('error')}"}  # fmt: skip
        console.print(f"[bold]study[/] {messages.get(event, event)}", soft_wrap=True)

    incomplete = None
    try:
        run_study(cfg, out, events=on_event)
    except StudyIncomplete as e:  # the other pairs, the tables and the report are still written
        incomplete = e
    except (UnsupportedModelError, NotAModelError, DataSpecError, FileNotFoundError, ConfigError) as e:
        _fail(str(e))
    except DirectoryLockedError as e:
        _fail(str(e))
    except Interrupted as e:
        _fail(f"{e} (rerun the same command to resume the study)", code=130)
    except RuntimeError as e:
        _fail(str(e))
    _print_claims(out / "summary.json")
    if report:
        from vrp.report.study import build_study_report

        typer.echo(str(build_study_report(out)))
    if incomplete is not None:
        _fail(str(incomplete), code=1)


def _print_claims(path: Path) -> None:
    import json

    summary = json.loads(path.read_text())
    table = Table(title="the paper's claims on this study (95% CIs; see the study report)")
    for col in ("claim", "verdict", "evidence"):
        table.add_column(col, overflow="fold")
    for c in summary["claims"]:
        table.add_row(c["claim"], c["verdict"], c["evidence"])
    _stdout().print(table)


@world_app.command("generate")
def world_generate(
    out: Path = typer.Option(..., help="Folder to write images/, items.jsonl, scenes.jsonl, world.json."),
    n: int = _opt(
        RunConfig, "world_images", help="number of images (each yields one item per task family; existence two)."
    ),
    seed: int = _opt(RunConfig, "seed", help="seed: same seed -> identical images and questions."),
    strategy: str = typer.Option(STRATEGY, help="POPE negative strategy: random, popular, adversarial or mixed."),
    world: str = typer.Option(
        "default",
        help="the world: default (48 px, 1-5 objects), fine (64 px, 1-8 objects: 8 x 8 tokens at 8 px a token) "
        "or fine-aspect (fine at five aspect ratios, 64-128 px a side).",
    ),
    image_size: int | None = typer.Option(
        None, help=f"{field_help(WorldConfig)['image_size']} [default: the world's; 48 for default]"
    ),
) -> None:
    """Generate a ShapesWorld dataset in the generic JSONL format."""
    from vrp.world.dataset import write_dataset
    from vrp.world.scene import world_preset

    try:
        wcfg = world_preset(world)
    except ValueError as e:
        _fail(str(e))
    if image_size is not None:
        wcfg = _config(WorldConfig, **{**wcfg.__dict__, "image_size": image_size})
    try:
        path = write_dataset(out, n, seed, wcfg, strategy)
    except ValueError as e:
        _fail(str(e))
    n_items = sum(1 for _ in path.open())
    console.print(f"wrote {n_items} items over {n} images to {path}")


@world_app.command("train")
def world_train(
    arch: str = typer.Option(..., help="llava, paligemma or qwen2vl."),
    out: Path = typer.Option(..., help="Folder to save the trained model and processor."),
    steps: int = typer.Option(
        None,
        help="Training steps (default: the recipe's for this arch). Fewer than the recipe's schedule stop "
        "that schedule early; more stretch the schedule to this length.",
    ),
    seed: int = _opt(TrainConfig, "seed"),
    threads: int = _opt(TrainConfig, "threads"),
    evaluate: bool = typer.Option(True, help="Measure greedy accuracy on held-out images and write eval.json."),
    world: str = typer.Option(
        "default",
        help="default (the shipped toys' 48 px world, 4 x 4 tokens) or fine (64 px at 8 px a token: 8 x 8 "
        "tokens, 1-8 objects; Qwen2-VL at five aspect ratios). The fine grain is not tuned yet (docs/toys.md).",
    ),
    device: str = _opt(
        RunConfig, "device", help="torch device (the recipe is tuned on CPU; a GPU gives other numbers)."
    ),
) -> None:
    """Train a toy VLM of ARCH from random init on ShapesWorld (CPU by default)."""
    from vrp.toys.build import ARCHS
    from vrp.toys.recipes import recipe_for
    from vrp.toys.train import train

    if arch not in ARCHS:
        _fail(f"unknown architecture {arch!r}; supported: {', '.join(ARCHS)}")
    try:
        cfg, wcfg = recipe_for(arch, seed=seed, steps=steps, threads=threads, world=world)
    except ValueError as e:
        _fail(str(e))
    with _progress() as prog:
        task = prog.add_task(f"training {arch}", total=cfg.steps, rate="", failures=0)

        def on_eval(rec: dict) -> None:
            acc = " ".join(f"{k}={v:.2f}" for k, v in rec["acc"].items())
            prog.update(task, completed=rec["step"], rate=acc)
            prog.console.log(f"step {rec['step']}: loss {rec['loss']:.3f}, held-out (teacher-forced) {acc}")

        log = train(cfg, out, wcfg, progress=on_eval, on_step=lambda s: prog.update(task, completed=s), device=device)
    ch = log["chosen"]
    console.print(
        f"kept step {ch['step']} (teacher-forced: " + ", ".join(f"{k} {v:.3f}" for k, v in ch["acc"].items()) + ")"
    )
    if evaluate:
        from vrp.toys.evaluate import TARGET_BAND, outside_band, write_eval

        result = write_eval(out, world=wcfg)
        _print_accuracy(
            result["accuracy"],
            f"{arch}: greedy accuracy on {result['n_images']} held-out images (seed {result['seed']})",
        )
        off = outside_band(result["accuracy"]["by_task"])
        if off:
            console.print(
                f"[yellow]outside the {TARGET_BAND[0]:.0%}-{TARGET_BAND[1]:.0%} target band: "
                + ", ".join(f"{t} {a:.3f}" for t, a in off.items())
                + ". Training these toys is chaotic: another --seed or --threads gives another run "
                "(docs/toys.md).[/yellow]"
            )
    console.print(f"saved to {out}")


@lens_app.command("train")
def lens_train(
    run: Path = typer.Option(..., "--run", help="A run directory written by `vrp run` with residuals stored."),
    epochs: int = _opt(LensConfig, "epochs"),
    batch_size: int = _opt(LensConfig, "batch_size"),
    lr: float = _opt(LensConfig, "lr"),
    weight_decay: float = _opt(LensConfig, "weight_decay"),
    patience: int = _opt(LensConfig, "patience"),
    seed: int = _opt(LensConfig, "seed"),
    device: str = _opt(LensConfig, "device"),
    model: str | None = _opt(LensConfig, "model"),
) -> None:
    """Fit the tuned lens (one affine translator per residual layer) on a run; write its margins and signals."""
    from vrp.analysis.lens_run import train_tuned_lens
    from vrp.models import NotAModelError, UnsupportedModelError

    _check_run_dir(run)
    cfg = _config(LensConfig, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  patience=patience, seed=seed, device=device, model=model)  # fmt: skip
    with console.status("tuned lens: loading the run and its model") as status:

        def on_layer(done: int, total: int) -> None:
            status.update(f"tuned lens: {done} of {total} residual layers done")

        try:
            doc = train_tuned_lens(run, cfg, on_layer=on_layer)
        except (ValueError, FileNotFoundError, NotAModelError, UnsupportedModelError) as e:
            _fail(str(e))
    table = Table(title=f"tuned lens on {run}: KL(final || lens) per residual layer, nats ({doc['split']['source']}, "
                        f"sizes {doc['split']['sizes']})")  # fmt: skip
    for col in ("residual layer", "logit lens val", "tuned val", "logit lens test", "tuned test", "best epoch"):
        table.add_column(col, justify="right")
    kl = doc["kl"]
    for k, layer in enumerate(doc["residual_layers"]):
        best = doc["fit"]["best_epoch"][k]
        table.add_row(str(layer), *(f"{kl[lens][s][k]:.4f}" for s in ("val", "test") for lens in ("logit", "tuned")),
                      "identity (the output)" if best is None else str(best))  # fmt: skip
    _stdout().print(table)
    console.print(f"wrote {run / 'lens' / 'tuned'}; the tuned_margin_* signals join `vrp analyze --run {run}`",
                  soft_wrap=True)  # fmt: skip


@monitor_app.command("export")
def monitor_export(
    run: Path = typer.Option(..., "--run", help="A run directory on which `vrp probe` has run."),
    out: Path = typer.Option(..., "--out", help="The monitor directory to write."),
    probe: str = _opt(ExportConfig, "probe"),
    target_risk: float | None = _opt(ExportConfig, "target_risk"),
    target_coverage: float | None = _opt(ExportConfig, "target_coverage"),
) -> None:
    """Package a run's probe, threshold and model identity as a monitor (safetensors + JSON)."""
    from vrp.monitor import MonitorError, export_monitor

    try:
        doc = export_monitor(run, out, probe=probe, target_risk=target_risk, target_coverage=target_coverage)
    except (MonitorError, ValueError) as e:
        _fail(str(e))
    p, t, m = doc["probe"], doc["threshold"], doc["metrics"]

    def auc(s: dict) -> str:
        lo, hi = s["ci95"]
        return f"{s['auroc']:.3f} [{lo:.3f}, {hi:.3f}]" if s["auroc"] is not None else "undefined"

    def op(s: dict) -> str:
        risk = "n/a" if s["risk"] is None else f"{s['risk']:.3f}"
        return f"coverage {s['coverage']:.3f}, risk {risk} (n = {s['n']})"

    console.print(
        f"{probe} at residual layer {p['residual_layer']}: AUROC val {auc(m['val'])}, test {auc(m['test'])}\n"
        f"threshold {t['value']:.4f} ({t['rule']} {t['target']}, chosen on validation): "
        f"val {op(t['val'])}; test {op(t['test'])}\nwrote {out}",
        soft_wrap=True,
    )
    if "consistency_head" in doc:
        console.print(
            f"with the consistency head (predicted_consistency) at residual layer "
            f"{doc['consistency_head']['residual_layer']}, read in the same greedy pass",
            soft_wrap=True,
        )
    if doc["model"]["content_sha256"] is None:
        console.print(
            f"[yellow]warning:[/] the run's model folder {doc['model']['path']} is not readable here (or changed): "
            "the monitor will check only the model's config and file sizes, not its weights",
            soft_wrap=True,
        )


def _load_monitor(monitor: Path, model: str | None, device: str, threshold: float | None, force: bool):
    import torch

    from vrp.config import TOY_MODELS
    from vrp.models import NotAModelError, UnsupportedModelError, load_adapter
    from vrp.monitor import Monitor, MonitorError

    try:
        mon = Monitor.load(monitor, threshold=threshold)
        info = mon.info["model"]
        name = model or (info["name"] if info["name"] in TOY_MODELS else info.get("path") or info["name"])
        with console.status(f"loading {name}"):
            adapter = load_adapter(name, dtype=getattr(torch, info["dtype"]), device=device)
        return mon.attach(adapter, force=force)
    except (NotAModelError, FileNotFoundError) as e:
        _fail(f"{e}" + ("" if model else "; pass the model's folder with --model PATH"))
    except (MonitorError, UnsupportedModelError) as e:
        _fail(str(e))


@app.command()
def ask(
    question: str | None = typer.Argument(None, help="The question (single mode)."),
    monitor: Path = typer.Option(..., "--monitor", help="A monitor directory written by `vrp monitor export`."),
    image: Path | None = typer.Option(None, "--image", help="The image (single mode)."),
    batch: Path | None = typer.Option(None, "--batch", help="Batch mode: a JSONL file of {id, image, question}."),
    out: Path | None = typer.Option(None, "--out", help="Batch mode: the answers file to write (JSONL)."),
    model: str | None = typer.Option(None, help="The model (default: the one the monitor was exported from)."),
    device: str = _opt(RunConfig, "device"),
    batch_size: int | None = typer.Option(None, help="Questions per generate call (default: the run's)."),
    threshold: float | None = typer.Option(None, help="Override the monitor's abstention threshold."),
    force: bool = typer.Option(False, "--force", help="Attach even if the model's identity or dtype differs."),
) -> None:
    """Answer with p(correct) and an abstention flag: one question, or a JSONL batch."""
    import json

    if batch is None and (image is None or question is None):
        _fail('single mode needs --image IMG and a question: vrp ask --monitor DIR --image IMG "question"')
    if batch is not None and (image is not None or question is not None or out is None):
        _fail("batch mode takes --batch FILE --out FILE and no --image or question")
    if batch is not None and not batch.is_file():
        _fail(f"batch file {batch} does not exist")
    if batch_size is not None and batch_size < 1:
        _fail("--batch-size must be >= 1")
    mon = _load_monitor(monitor, model, device, threshold, force)
    if batch is None:
        try:
            a = mon.ask(image, question)
        except ValueError as e:
            _fail(str(e))
        doc = {"answer": a.text, "p_correct": a.p_correct, "abstain": a.abstain}
        print(json.dumps({**doc, "predicted_consistency": a.predicted_consistency}))  # null without a head
        verdict = "[yellow]abstain[/]" if a.abstain else "[green]answer[/]"
        sc = "" if a.predicted_consistency is None else f", predicted consistency {a.predicted_consistency:.3f}"
        console.print(f"{verdict}: p(correct) = {a.p_correct:.3f} (threshold {a.threshold:.3f}){sc}")
        return
    from vrp.monitor.batch import answer_file

    def on_skip(source: str, reason: str) -> None:
        console.print(f"[yellow]skipped[/] {source}: {reason}", soft_wrap=True)

    with console.status("answering"):
        counts = answer_file(mon, batch, out, batch_size=batch_size, on_skip=on_skip)
    console.print(
        f"answered {counts['answered']} ({counts['abstained']} flagged abstain), skipped {counts['skipped']}; wrote {out}"
    )


@app.command()
def serve(
    monitor: Path = typer.Option(..., "--monitor", help="A monitor directory written by `vrp monitor export`."),
    model: str | None = typer.Option(None, help="The model (default: the one the monitor was exported from)."),
    host: str = _opt(ServeConfig, "host"),
    port: int = _opt(ServeConfig, "port"),
    allow_paths: Path | None = _opt(ServeConfig, "allow_paths"),
    max_batch_size: int = _opt(ServeConfig, "max_batch_size"),
    max_wait_ms: float = _opt(ServeConfig, "max_wait_ms"),
    max_queue: int = _opt(ServeConfig, "max_queue"),
    max_request_bytes: int = _opt(ServeConfig, "max_request_bytes"),
    max_image_bytes: int = _opt(ServeConfig, "max_image_bytes"),
    max_image_pixels: int = _opt(ServeConfig, "max_image_pixels"),
    metrics_window: int = _opt(ServeConfig, "metrics_window"),
    shutdown_timeout_s: float = _opt(ServeConfig, "shutdown_timeout_s"),
    served_model_name: str | None = _opt(ServeConfig, "served_model_name"),
    device: str = _opt(RunConfig, "device"),
    threshold: float | None = typer.Option(None, help="Override the monitor's abstention threshold."),
    force: bool = typer.Option(False, "--force", help="Attach even if the model's identity or dtype differs."),
    log_level: str = typer.Option("info", help="Server log level: debug, info (with the access log), warning, error."),
) -> None:
    """Serve the monitor over HTTP: OpenAI-style chat completions with p(correct) and abstain (docs/serve.md)."""
    try:
        from vrp.serve.server import serve as run_server
    except ImportError as e:
        _fail(f"vrp serve needs FastAPI, uvicorn and prometheus_client ({e}): pip install 'vrp[serve]'")
    if allow_paths is not None and not allow_paths.is_dir():
        _fail(f"--allow-paths {allow_paths} is not a folder")
    cfg = _config(ServeConfig, host=host, port=port, allow_paths=None if allow_paths is None else str(allow_paths),
                  max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                  max_request_bytes=max_request_bytes, max_image_bytes=max_image_bytes,
                  max_image_pixels=max_image_pixels, metrics_window=metrics_window,
                  shutdown_timeout_s=shutdown_timeout_s, served_model_name=served_model_name)  # fmt: skip
    mon = _load_monitor(monitor, model, device, threshold, force)

    def ready(url: str) -> None:
        console.print(f"vrp serve: ready on {url} (POST {url}/v1/chat/completions; SIGTERM to stop)", soft_wrap=True)

    try:
        run_server(mon, cfg, on_ready=ready, log_level=log_level, restore_signals=False)
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e}")
    console.print("vrp serve: stopped (requests in flight answered)")


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
