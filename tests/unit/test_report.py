"""The report on synthetic run directories (no model): figures, degradation, escaping, summary.json."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vrp.report import build_report, html
from vrp.report import figures as F
from vrp.report.cases import cases_section, resolve_layer
from vrp.report.curves import mean_band
from vrp.report.data import load_run
from vrp.report.effects import interventions_section
from vrp.report.sections import predictors_section
from vrp.report.summary import build_summary
from vrp.runs import storage
from vrp.runs.pipeline import summarize
from vrp.runs.rundir import atomic_write_json, items_schema, write_table
from vrp.signals.catalog import BY_NAME, NAMES

N_LAYERS, GRID = 3, (3, 4)
EVIL = "<script>alert('x')</script> & \"quotes\""


def fake_run(root: Path, n: int = 40, seed: int = 0) -> Path:
    """A run directory as ``vrp run`` writes it, with random signals (two shards, a constant column)."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    (run / "data" / "images").mkdir(parents=True)
    correct = np.arange(n) % 3 != 0
    rows, tensors = [], []
    for i in range(n):
        img = run / "data" / "images" / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(img)
        row = {"id": f"it-{i:03d}", "task": "existence" if i % 2 else "counting", "question": f"question {i}?",
               "answer": "yes", "gold": ["yes" if correct[i] else "no"], "score": float(correct[i]),
               "correct": bool(correct[i]), "image": str(img), "n_answer_tokens": 1, "meta": "{}",
               "samples": ["yes", "no"]}  # fmt: skip
        for name in NAMES:
            row[name] = float(rng.normal() + 0.8 * correct[i])
        row["token_confidence"] = float(np.clip(0.5 + 0.3 * correct[i] + 0.2 * rng.normal(), 0.01, 0.99))
        row["attn_secondary"] = 0.0  # constant: undefined
        rows.append(row)
        tensors.append({
            "curve.margin": rng.normal(size=N_LAYERS + 1).astype(np.float32) + correct[i],
            "curve.lens_top_id": rng.integers(0, 50, N_LAYERS + 1),
            "curve.attn_entropy": rng.random(N_LAYERS).astype(np.float32),
            "curve.attn_entropy_delta": np.r_[np.nan, rng.normal(size=N_LAYERS - 1)].astype(np.float32),
            "curve.attn_contrib": rng.normal(size=N_LAYERS).astype(np.float32),
            "curve.mlp_contrib": rng.normal(size=N_LAYERS).astype(np.float32),
            "attention": rng.dirichlet(np.ones(GRID[0] * GRID[1]), N_LAYERS).reshape(N_LAYERS, *GRID).astype(np.float32),
        })  # fmt: skip
    rows[1]["question"] = EVIL  # item 1 is correct; made the least confident right one below
    rows[1]["token_confidence"] = 0.001
    for start, end in ((0, n // 2), (n // 2, n)):
        arrays = {}
        for k in tensors[0]:
            if k == "attention":
                arrays.update({f"attention.{r}": t["attention"] for r, t in enumerate(tensors[start:end])})
            else:
                arrays[k] = np.stack([t[k] for t in tensors[start:end]])
        table = pa.Table.from_pylist(rows[start:end], schema=items_schema())
        meta = {"stored_layers": list(range(N_LAYERS)), "n_layers": N_LAYERS}
        storage.write_shard(run, start, end, table, arrays, [], meta)
    write_table(run / "items.parquet", pa.Table.from_pylist(rows, schema=items_schema()))
    (run / "failures.jsonl").write_text(json.dumps({"id": "bad", "stage": "image", "source": "x.png",
                                                    "error": "image file not found: x.png"}) + "\n")  # fmt: skip
    atomic_write_json(run / "manifest.json", {
        "status": "complete", "model": {"name": "fake-model", "model_type": "llava", "path": str(root / "nomodel"),
                                        "sha256": "ab" * 32},
        "data": {"format": "generic", "path": "items.jsonl"}, "config": {"seed": 0, "samples": 2},
        "counts": {"items": n + 1, "answered": n, "failed": 1}, "versions": {"vrp": "0.1.0"},
        "accuracy": summarize(rows),
    })  # fmt: skip
    return run


def add_probes(run: Path) -> None:
    items = pq.read_table(run / "items.parquet").to_pandas()
    n = len(items)
    split = np.array(["train", "val", "test", "test"] * (n // 4 + 1))[:n]
    rng = np.random.default_rng(3)
    p = np.clip(0.5 + 0.3 * (items["correct"].to_numpy() - 0.5) + 0.2 * rng.normal(size=n), 0, 1)
    cols = {"id": items["id"], "split": split, "probe_dense": p, "probe_stacked": rng.random(n)}
    (run / "probes").mkdir()
    write_table(run / "probes" / "predictions.parquet", pa.table(cols))
    by_layer = [0.5, 0.6, 0.7, 0.65]
    atomic_write_json(run / "probes" / "summary.json", {
        "n": n, "split_sizes": [int((split == s).sum()) for s in ("train", "val", "test")],
        "residual_layers": list(range(N_LAYERS + 1)),
        "probes": {
            "probe_dense": {"layer_index": 2, "residual_layer": 2, "C": 1.0, "val_auroc": 0.7, "test_auroc": 0.66,
                            "val_auroc_by_layer": by_layer, "test_auroc_by_layer": [float("nan"), 0.55, 0.66, 0.6]},
            "probe_sparse": {"layer_index": 1, "residual_layer": 1, "C": 1.0, "val_auroc": 0.6, "test_auroc": 0.6,
                             "val_auroc_by_layer": by_layer, "test_auroc_by_layer": [float("nan"), 0.6, 0.6, 0.6],
                             "nonzero_units": [1, 2]},
            "probe_stacked": {"k": 3, "C": 0.1, "val_auroc": 0.9, "test_auroc": 0.5},
        },
    })  # fmt: skip


def add_analysis(run: Path) -> None:
    from vrp.analysis.config import AnalyzeConfig
    from vrp.analysis.predictors import analyze

    analyze(run, AnalyzeConfig(n_boot=200, n_perm=200))


def _schema():
    """``vrp/interventions/schema.py`` read on its own (importing the package would load torch)."""
    import importlib.util

    import vrp

    path = Path(vrp.__file__).parent / "interventions" / "schema.py"
    spec = importlib.util.spec_from_file_location("_vrp_intervention_schema", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def add_interventions(run: Path) -> None:
    schema = _schema()
    EFFECTS, PATCHING = schema.EFFECTS, schema.PATCHING

    d = run / "interventions"
    d.mkdir()
    eff = []
    for cond, control in (("probe top-8 L1 zero", False), ("random 8 L1 zero", True)):
        for task in ("all", "existence"):
            eff.append({"experiment": "neurons", "kind": "neurons", "condition": cond, "layer": 1, "control": control,
                        "task": task, "n": 40, "acc_clean": 0.7, "acc_intervened": 0.55 if not control else 0.69,
                        "delta_pp": -15.0 if not control else -1.0, "delta_ci_low": -22.5, "delta_ci_high": -7.5,
                        "margin_delta": -0.8, "margin_ci_low": -1.1, "margin_ci_high": -0.5})  # fmt: skip
    write_table(d / "effects.parquet", pa.Table.from_pylist(eff, schema=EFFECTS))
    pat = [{"experiment": "patching", "corruption": "top-30% patches (pixel)", "site": site, "layer": layer, "n": 40,
            "recovered": layer / 3, "ci_low": layer / 3 - 0.1, "ci_high": layer / 3 + 0.1}
           for site in ("residual", "mlp") for layer in range(N_LAYERS)]  # fmt: skip
    write_table(d / "patching.parquet", pa.Table.from_pylist(pat, schema=PATCHING))
    atomic_write_json(d / "summary.json", {"experiments": {"neurons": {"kind": "neurons", "config": {"k": 8},
                                                                       "n_items": 40, "conditions": []}}})  # fmt: skip


@pytest.fixture
def run(tmp_path) -> Path:
    return fake_run(tmp_path)


def _is_png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def test_figure_helpers_return_valid_pngs():
    x = np.arange(4)
    band = F.Band("a", np.array([0.1, np.nan, 0.3, 0.2]), np.zeros(4), np.ones(4) * 0.5)
    pngs = [
        F.interval_plot([F.Interval("s", 0.7, 0.6, 0.8), F.Interval("t", 0.4, 0.3, 0.5, hollow=True)], 0.5, "AUROC"),
        F.band_plot(x, [band, F.Band("b", np.ones(4))], "t", "layer", "y", hline=0.0, mark_x=2),
        F.risk_coverage_plot([F.Curve("c", np.linspace(0.1, 1, 10), np.linspace(0, 0.3, 10))], 0.3, "rc"),
        F.reliability_plot([F.Curve("c", np.array([0.2, np.nan, 0.8]), np.array([0.3, np.nan, 0.7]))], "rel"),
        F.case_figure(
            np.zeros((24, 32, 3), np.uint8),
            np.ones((3, 4)) / 12,
            np.array([-1.0, 0.5, 2.0]),
            ["a", "b", "c"],
            "attention",
            "lens",
        ),
        F.case_figure(None, None, None, [], "attention", "lens"),  # missing image, map and curve
        F.recovery_plot([F.Recovery("residual", x, x / 3, x / 3 - 0.1, x / 3 + 0.1)], "patching"),
    ]
    for png in pngs:
        w, h = _is_png(png)
        assert w > 100 and h > 100


def test_mean_band_known_values_and_nan():
    v = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0], [2.0, 4.0, 5.0]])
    mean, lo, hi = mean_band(v, n_boot=500)
    np.testing.assert_allclose(mean, [2.0, 4.0, 5.0])
    assert lo[0] <= 2.0 <= hi[0] and lo[0] >= 1.0 and hi[0] <= 3.0
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # one finite value: no interval
    assert lo[2] == hi[2] == 5.0
    assert all(np.isnan(mean_band(np.ones((1, 2)))[1]))  # a single item: no interval


def _build_in_subprocess(run: Path, *args: str) -> None:
    """build_report in a fresh interpreter, asserting that no model code gets imported."""
    code = (
        "import sys; from pathlib import Path; from vrp.report import build_report; "
        f"build_report(Path({str(run)!r}){''.join(', ' + a for a in args)}); "
        "bad = [m for m in sys.modules if m.startswith(('vrp.models', 'vrp.capture', 'torch', 'transformers'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_partial_run_says_what_is_missing_and_loads_no_model_code(run):
    _build_in_subprocess(run)
    page = (run / "report" / "index.html").read_text()
    for cmd in (f"vrp probe --run {run}", f"vrp analyze --run {run}", f"vrp intervene --run {run} --kind KIND"):
        assert cmd in page
    assert "This run has no predictor table" in page and "This run has no intervention results" in page
    summary = json.loads((run / "summary.json").read_text())
    assert summary["top_predictors"] is None and summary["best_probe"] is None and summary["interventions"] is None
    assert set(summary["missing"]) == {"probes", "analysis", "interventions"}
    assert summary["n_items"] == 41 and summary["n_answered"] == 40 and summary["n_failed"] == 1
    assert "image file not found: x.png" in page  # the failure is listed
    # per-layer curves still come from the shards
    assert "shards (curve.attn_entropy)" in page and "shards (curve.margin)" in page
    # run, predictors, consistency, layers, sparse circuits, selective, cases, interventions
    assert page.count("<section id=") == 8


def test_untrusted_text_is_escaped(run):
    body = cases_section(load_run(run), None, 4).body
    assert "<script" not in body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in body
    page = html.page(EVIL, EVIL, [html.Section("a", EVIL, body)])
    assert "<script" not in page


def test_undefined_signals_are_shown_with_their_reason(run):
    add_analysis(run)
    data = load_run(run)
    body = predictors_section(data).body
    row = re.search(r"<tr><td>.{0,200}attn_secondary</code>.*?</tr>", body, re.S).group(0)
    assert "undefined" in row and "signal is constant (all 40 scores are 0)" in row
    assert "0.500" not in row
    margin = re.search(r"<tr><td>.{0,200}margin_last</code>.*?</tr>", body, re.S).group(0)
    assert "(needs gold answer)" in margin and "needs gold" not in row
    summary = build_summary(data, 6)
    assert summary["undefined_predictors"]["attn_secondary"].startswith("signal is constant")


def test_gold_reading_signals_are_marked_in_the_forest_plot_and_per_layer_figure(run, monkeypatch):
    from vrp.report import layers

    add_analysis(run)
    data = load_run(run)
    drawn = {}

    def record(title, rows):
        drawn[title] = rows
        return b""

    monkeypatch.setattr(F, "interval_plot", lambda rows, *a, **k: record("forest", rows))
    monkeypatch.setattr(F, "band_plot", lambda x, bands, title, *a, **k: record(title, bands))
    monkeypatch.setattr(layers, "img", lambda png, alt: "")
    monkeypatch.setattr("vrp.report.sections.img", lambda png, alt: "")
    predictors_section(data)
    layers.layers_section(data, n_boot=50)
    labels = {r.label.removesuffix(" [gold]"): r.label.endswith(" [gold]") for r in drawn["forest"]}
    assert labels and labels == {n: bool(BY_NAME[n].needs) for n in labels}
    assert any(labels.values()) and not all(labels.values())
    per_layer = [b.label for b in drawn["AUROC per layer of single signals"]]
    assert "margin [gold answer]" in per_layer and "attn_entropy" in per_layer
    assert all("gold" not in b for b in per_layer if not b.startswith(("margin", "attn_region_ratio")))


def test_a_predictor_table_from_before_the_needs_column_gets_it_from_the_catalog(run):
    add_analysis(run)
    path = run / "analysis" / "predictors.parquet"
    t = pq.read_table(path)
    pq.write_table(t.drop(["needs"]), path)
    data = load_run(run)
    assert dict(zip(data.predictors["name"], data.predictors["needs"], strict=True)) == dict(
        zip(t["name"].to_pylist(), t["needs"].to_pylist(), strict=True)
    )
    top = build_summary(data, 6)["top_predictors"]
    assert [r["needs"] for r in top] == [BY_NAME[r["name"]].needs for r in top]


def test_summary_matches_the_analysis_files(run):
    add_probes(run)
    add_analysis(run)
    summary = build_summary(load_run(run), 6)
    t = pq.read_table(run / "analysis" / "predictors.parquet").to_pandas()
    signals = t[(t["undefined"] == "") & (t["family"] != "probe")].sort_values("auroc", ascending=False)
    top = summary["top_predictors"]
    assert [r["name"] for r in top] == list(signals["name"][:5])
    for r in top:
        row = t.set_index("name").loc[r["name"]]
        assert (r["auroc"], r["ci_low"], r["ci_high"], r["p_bh"]) == (row["auroc"], row["ci_low"], row["ci_high"],
                                                                      row["p_bh"])  # fmt: skip
        assert r["needs"] == BY_NAME[r["name"]].needs
    best = summary["best_probe"]  # chosen on validation (0.9 > 0.7), not on test
    assert best["name"] == "probe_stacked" and best["k"] == 3
    row = t.set_index("name").loc["probe_stacked"]
    assert (best["test_auroc"], best["ci_low"], best["ci_high"], best["n_test"]) == (
        row["auroc"], row["ci_low"], row["ci_high"], row["n"])  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    assert summary["accuracy"] == manifest["accuracy"]
    assert summary["model"]["sha256"] == "ab" * 32 and list(summary["missing"]) == ["interventions"]
    ids = summary["cases"]["confident_wrong"] + summary["cases"]["unconfident_right"]
    assert len(ids) == 6 and "it-001" in summary["cases"]["unconfident_right"]
    json.dumps(summary, allow_nan=False)  # strict JSON: NaN written as null


def test_probe_ci_is_computed_when_the_analysis_is_missing(run):
    add_probes(run)
    best = build_summary(load_run(run), 6)["best_probe"]
    assert best["source"].startswith("probes/predictions.parquet")
    assert best["ci_low"] <= best["test_auroc"] <= best["ci_high"]


def test_missing_image_and_interventions(run):
    add_probes(run)
    add_interventions(run)
    (run / "data" / "images" / "001.png").unlink()
    data = load_run(run)
    cases = cases_section(data, None, 4).body
    card = cases[cases.index("it-001</code></h4>") :][:3000]
    assert "image file not found: <code>" in card
    assert "[test]" in cases or "[train]" in cases or "[val]" in cases  # the probe's score and its split
    body = interventions_section(data).body
    assert "probe top-8 L1 zero" in body and "random 8 L1 zero" in body
    assert "-15.0 <span class='ci'>[-22.5, -7.5]</span>" in body  # delta pp with its CI
    assert "Activation patching: patching" in body and "top-30% patches (pixel)" in body
    summary = build_summary(data, 4)
    assert [r["condition"] for r in summary["interventions"]] == ["probe top-8 L1 zero", "random 8 L1 zero"]


def test_moved_run_finds_its_images(run, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(str(run), moved)
    assert "image file not found" not in cases_section(load_run(moved), None, 2).body


def test_layer_option(run):
    meta = {"stored_layers": [0, 2], "n_layers": 3}
    assert (
        resolve_layer(None, meta) == (2, 1) and resolve_layer(-1, meta) == (2, 1) and resolve_layer(0, meta) == (0, 0)
    )
    with pytest.raises(ValueError, match="no stored attention map"):
        resolve_layer(1, meta)
    assert resolve_layer(None, {}) == (None, None)
    assert "decoder block 0" in cases_section(load_run(run), 0, 2).body
    with pytest.raises(ValueError, match="no stored attention map"):
        build_report(run, layer=5)
    with pytest.raises(FileNotFoundError):
        build_report(run / "nothing")
