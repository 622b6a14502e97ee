"""``build_report``: the run directory in, ``report/index.html`` and ``summary.json`` out."""

from __future__ import annotations

from pathlib import Path

from vrp.fileio import atomic_write_bytes
from vrp.report.cases import cases_section
from vrp.report.config import ReportConfig
from vrp.report.consistency import consistency_section
from vrp.report.data import finite, load_run
from vrp.report.effects import interventions_section
from vrp.report.html import page
from vrp.report.layers import layers_section
from vrp.report.sections import predictors_section, run_section, selective_section
from vrp.report.summary import build_summary
from vrp.report.units import units_section
from vrp.runs.rundir import atomic_write_json


def build_report(run_dir: Path, *, layer: int | None = ReportConfig.layer, n_cases: int = ReportConfig.n_cases) -> Path:
    """Write ``RUN_DIR/report/index.html`` and ``RUN_DIR/summary.json`` from the run directory alone.

    No model is loaded: everything comes from what ``vrp run`` / ``probe`` / ``analyze`` /
    ``intervene`` wrote. Parts the run lacks become sections saying so and naming the
    command that makes them. Figures are embedded PNGs, so the page is one offline file.

    Args:
        run_dir: a run directory written by ``vrp run``.
        layer: decoder block (0-based; negative counts from the end) of the attention overlays
            in the case studies; default the last stored block.
        n_cases: case studies in all: ``ceil(n/2)`` most confident wrong answers and
            ``floor(n/2)`` least confident right ones.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: ``run_dir`` holds no finished run.
        ValueError: ``layer`` has no stored attention map, or ``n_cases`` < 0.
    """
    ReportConfig(layer=layer, n_cases=n_cases)  # validates
    run = load_run(Path(run_dir))
    sections = [
        run_section(run),
        predictors_section(run),
        consistency_section(run),
        layers_section(run),
        units_section(run),
        selective_section(run),
        cases_section(run, layer, n_cases),
        interventions_section(run),
    ]
    model = run.manifest.get("model", {}).get("name", "model")
    data = run.manifest.get("data", {}).get("format", "data")
    summary = build_summary(run, n_cases)
    overall = summary["accuracy"]["overall"]
    ci = overall.get("ci95") or [None, None]
    acc = "n/a"
    if finite(overall.get("accuracy")):
        lo, hi = ci
        acc = f"{overall['accuracy']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if finite(lo) and finite(hi) else "")
    subtitle = f"{run.run_dir} · {summary['n_answered']} items answered, {summary['n_failed']} failed · accuracy {acc}"
    out = run.run_dir / "report"
    out.mkdir(exist_ok=True)
    path = out / "index.html"
    atomic_write_bytes(path, page(f"vrp report: {model} on {data}", subtitle, sections).encode("utf-8"))
    atomic_write_json(run.run_dir / "summary.json", summary)
    return path
