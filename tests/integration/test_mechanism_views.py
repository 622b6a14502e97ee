"""The sparse-circuit view and the symbolic-detachment case studies end to end on a synthetic run directory
(no model): `vrp analyze` writes them, the report renders both (with the neurons ablations beside the units), and
a run that lacks what they need gets a clear notice instead."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from tests.unit.test_units import PLANTED, planted_run
from vrp.analysis.config import AnalyzeConfig
from vrp.analysis.predictors import analyze
from vrp.interventions.schema import EFFECTS
from vrp.report import build_report
from vrp.runs.rundir import atomic_write_json, write_table


def _section(page: str, sid: str) -> str:
    start = page.index(f"<section id='{sid}'>")
    return page[start : page.index("</section>", start)]


def _add_neurons(run, units: list[int]) -> None:
    """interventions/ as `vrp intervene --kind neurons` writes it, plus an experiment from before units were recorded."""
    conds = {"neurons": [("probe top-2 L1 residual zero", False, units), ("random 2 L1 residual zero", True, [0, 3])],
             "old": [("probe top-16 L1 residual zero", False, None)]}  # fmt: skip
    exps, rows = {}, []
    for name, cs in conds.items():
        entry = {"kind": "neurons", "config": {"site": "residual"}, "n_items": 240, "conditions": []}
        for label, control, us in cs:
            c = {"label": label, "layer": 1, "control": control, "file": "x.parquet"}
            if us is not None:
                c.update(units=us, site="residual")
            entry["conditions"].append(c)
            delta = -12.5 if name == "neurons" and not control else -1.0
            rows.append({"experiment": name, "kind": "neurons", "condition": label, "layer": 1, "control": control,
                         "task": "all", "n": 240, "acc_clean": 0.6, "acc_intervened": 0.6 + delta / 100,
                         "delta_pp": delta, "delta_ci_low": delta - 2, "delta_ci_high": delta + 2,
                         "margin_delta": -0.5, "margin_ci_low": -0.7, "margin_ci_high": -0.3})  # fmt: skip
        exps[name] = entry
    (run / "interventions").mkdir()
    write_table(run / "interventions" / "effects.parquet", pa.Table.from_pylist(rows, schema=EFFECTS))
    atomic_write_json(run / "interventions" / "summary.json", {"experiments": exps})


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = planted_run(tmp_path_factory.mktemp("mech"))
    summary = analyze(run, AnalyzeConfig(n_boot=300, n_perm=100, units_top=4))
    _add_neurons(run, [PLANTED, 11])
    build_report(run, n_cases=4)
    return run, summary


def test_analyze_writes_both_views(full):
    run, summary = full
    assert summary["units"]["available"] and summary["units"]["chosen_residual_layer"] == 2
    assert summary["detachment"]["available"] and summary["detachment"]["n_region"] == 240
    for name in ("units.parquet", "units.json", "detachment.json"):
        assert (run / "analysis" / name).is_file()
    stored = json.loads((run / "analysis" / "summary.json").read_text())
    assert stored["units"]["chosen"]["n_nonzero"] == summary["units"]["chosen"]["n_nonzero"]


def test_report_shows_the_units_with_their_ablation(full):
    run, _ = full
    page = (run / "report" / "index.html").read_text()
    body = _section(page, "units")
    assert "Sparse circuits" in body and "Top units at residual layer 2 (the probe's chosen layer)" in body
    assert body.count("<img") == 2  # the |coefficient| distribution and the activation histograms
    row = re.search(rf"<tr><td class='num'>1</td><td><code>N{PLANTED}</code>.*?</tr>", body, re.S).group(0)
    assert "-12.5" in row and "with 1 other unit" in row  # the planted unit was ablated with one other
    assert "units not recorded" in row  # the old experiment: what was ablated, not a per-unit claim
    assert "random 2" not in row  # controls are not the unit's effect
    note = body[body.index("What the neurons experiments ablated") :]
    control = re.search(r"<li><code>neurons</code> · random 2 L1 residual zero <em>\(control: random units\)</em>: "
                        r"2 units of block 1.*?</li>", note).group(0)  # fmt: skip
    assert "-1.0" in control and "[-3.0, +1.0]" in control  # the control's own effect, beside the probe units'
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sparse_circuit"]["residual_layer"] == 2 and summary["sparse_circuit"]["top1_share"] > 0.5


def test_case_studies_gain_the_detachment_galleries(full):
    run, _ = full
    page = (run / "report" / "index.html").read_text()
    cases = _section(page, "cases")
    assert "Symbolic detachment" in cases and "Attended yet wrong" in cases and "Missed yet right" in cases
    summary = json.loads((run / "summary.json").read_text())
    view = json.loads((run / "analysis" / "detachment.json").read_text())
    shown = summary["cases"]["attended_wrong"] + summary["cases"]["missed_right"]
    assert summary["cases"]["attended_wrong"] == view["ids"]["focused_wrong"][:2]
    assert summary["cases"]["missed_right"] == view["ids"]["missed_right"][:2]
    assert shown and all(f"<code>{i}</code>" in cases for i in shown)
    assert cases.count("<div class='case'>") == 4 + len(shown)  # the two existing galleries and the new two
    assert "region ratio" in cases and summary["detachment"]["focused_wrong"]["n"] == view["rows"][0]["n_wrong"]


def test_views_degrade_to_notices(tmp_path):
    run = planted_run(tmp_path, n=40, region=False, probes=False)
    build_report(run)  # before any analysis
    page = (run / "report" / "index.html").read_text()
    assert "This run has no analysis (analysis/units.json)" in _section(page, "units")
    assert "This run has no analysis (analysis/detachment.json)" in _section(page, "cases")
    assert f"vrp analyze --run {run}" in _section(page, "units")
    analyze(run, AnalyzeConfig(n_boot=50, n_perm=50))
    build_report(run)
    page = (run / "report" / "index.html").read_text()
    assert "No sparse-circuit view: no sparse probe" in _section(page, "units")
    assert "No detachment view: no item has a gold region" in _section(page, "cases")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sparse_circuit"]["available"] is False and summary["detachment"]["available"] is False


def test_cards_outline_gold_regions_and_name_the_overlay_block(tmp_path):
    run = planted_run(tmp_path, n=60)
    analyze(run, AnalyzeConfig(n_boot=50, n_perm=50))
    build_report(run, n_cases=4)
    cases = _section((run / "report" / "index.html").read_text(), "cases")
    assert "gold regions not drawn: the manifest names no data file" in cases
    assert "The overlays below show decoder block" not in cases  # the last block: the one the selection read
    # the data file with the items' regions, where ShapesWorld writes it
    manifest = json.loads((run / "manifest.json").read_text())
    recs = [{"id": f"it-{i:03d}", "regions": [{"label": "obj", "box": [2, 2, 12, 10]}]} for i in range(60)]
    (run / "data" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    manifest["data"] = {"format": "shapesworld", "path": str(run / "data" / "items.jsonl")}
    atomic_write_json(run / "manifest.json", manifest)
    build_report(run, layer=0, n_cases=4)
    cases = _section((run / "report" / "index.html").read_text(), "cases")
    assert "gold regions not drawn" not in cases and "outlined in cyan" in cases
    assert "The overlays below show decoder block 0" in cases and "the selection read block 1" in cases


def test_vrp_analyze_takes_the_detachment_thresholds_and_keeps_them(tmp_path):
    """`vrp analyze --detach-*` writes detachment.json with those thresholds (a rerun of analyze with
    other options would otherwise have reset them to the defaults); the selection follows them."""
    from typer.testing import CliRunner

    from vrp.analysis.detachment import DetachmentConfig, detachment
    from vrp.cli import app

    run = planted_run(tmp_path)
    args = ["analyze", "--run", str(run), "--n-boot", "50", "--n-perm", "20"]
    res = CliRunner().invoke(app, [*args, "--detach-focus-quantile", "0.75", "--detach-miss-rule", "argmax"])
    assert res.exit_code == 0, res.output
    view = json.loads((run / "analysis" / "detachment.json").read_text())
    assert view["config"]["focus_quantile"] == 0.75 and view["config"]["miss_rule"] == "argmax"
    expected = detachment(run, DetachmentConfig(focus_quantile=0.75, miss_rule="argmax"))
    assert view["ids"] == expected["ids"] and view["ids"] != detachment(run)["ids"]
    res = CliRunner().invoke(app, [*args, "--detach-miss-rule", "nearby"])
    assert res.exit_code == 2 and "miss_rule" in res.output
