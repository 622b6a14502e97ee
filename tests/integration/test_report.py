"""`vrp report` on a real toy-llava run (`vrp run` with its default stages), checked in headless Chromium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and the ``selenium`` package (the ``dev`` extra); without them it is skipped
with the reason, never passed. The full-page screenshot is kept in ``$VRP_TEST_ARTIFACTS``
(default ``tests/artifacts/``) as ``report.png``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vrp.cli import app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SECTIONS = ("run", "predictors", "consistency", "layers", "units", "selective", "cases", "interventions")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--model", "toy-llava", "--out", str(out), "--data", "shapesworld:40",
                              "--samples", "4", "--max-new-tokens", "4", "--seed", "5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    # `vrp run` with default options runs the whole pipeline: probes, analysis, report
    for made in ("probes/summary.json", "analysis/predictors.parquet", "report/index.html", "summary.json"):
        assert (out / made).is_file(), made
    assert "predictors of correctness" in res.output and "report/index.html" in res.output
    res = runner.invoke(app, ["report", "--run", str(out), "--cases", "4"])  # each stage also on its own
    assert res.exit_code == 0, res.output
    assert str(out / "report" / "index.html") in res.output
    return out


def test_summary_json_holds_the_analysis_numbers(reported):
    summary = json.loads((reported / "summary.json").read_text())
    manifest = json.loads((reported / "manifest.json").read_text())
    assert summary["accuracy"] == json.loads(json.dumps(manifest["accuracy"]))
    assert summary["model"]["sha256"] == manifest["model"]["sha256"]
    assert summary["n_answered"] == manifest["counts"]["answered"]
    t = pq.read_table(reported / "analysis" / "predictors.parquet").to_pandas().set_index("name")
    for r in summary["top_predictors"]:
        assert r["auroc"] == t.loc[r["name"], "auroc"] and r["ci_low"] <= r["auroc"] <= r["ci_high"]
    probes = json.loads((reported / "probes" / "summary.json").read_text())["probes"]
    best = summary["best_probe"]
    assert best["val_auroc"] == max(e["val_auroc"] for e in probes.values())
    assert best["test_auroc"] == t.loc[best["name"], "auroc"] and best["source"] == "analysis/predictors.parquet"
    assert set(summary["missing"]) == {"interventions"}
    page = (reported / "report" / "index.html").read_text()
    for name in summary["cases"]["confident_wrong"] + summary["cases"]["unconfident_right"]:
        assert f"<code>{name}</code>" in page
    assert "image file not found" not in page  # the run's own images are found


def test_partial_run(reported, tmp_path):
    part = tmp_path / "partial"
    shutil.copytree(reported, part, ignore=shutil.ignore_patterns("probes", "analysis", "report", "summary.json"))
    res = CliRunner().invoke(app, ["report", "--run", str(part)])
    assert res.exit_code == 0, res.output
    page = (part / "report" / "index.html").read_text()
    assert f"vrp probe --run {part}" in page and f"vrp analyze --run {part}" in page
    assert json.loads((part / "summary.json").read_text())["best_probe"] is None


def _interventions(run: Path) -> None:
    """Synthetic intervention results in the schema of vrp.interventions.schema."""
    import importlib.util

    import vrp

    # read schema.py on its own: importing the vrp.interventions package loads the model-side hooks
    spec = importlib.util.spec_from_file_location("_schema", Path(vrp.__file__).parent / "interventions" / "schema.py")
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    d = run / "interventions"
    d.mkdir(exist_ok=True)
    eff = [{"experiment": "neurons", "kind": "neurons", "condition": c, "layer": 2, "control": c.startswith("random"),
            "task": task, "n": 100, "acc_clean": 0.7, "acc_intervened": 0.6, "delta_pp": -10.0, "delta_ci_low": -16.0,
            "delta_ci_high": -4.0, "margin_delta": -0.5, "margin_ci_low": -0.8, "margin_ci_high": -0.2}
           for c in ("probe top-16 L2 zero", "random 16 L2 zero") for task in ("all", "existence", "counting")]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(eff, schema=schema.EFFECTS), d / "effects.parquet")
    pat = [{"experiment": "patching", "corruption": "top-30% patches (pixel)", "site": site, "layer": layer, "n": 100,
            "recovered": layer / 4, "ci_low": layer / 4 - 0.1, "ci_high": layer / 4 + 0.1}
           for site in ("residual", "attn", "mlp") for layer in range(4)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(pat, schema=schema.PATCHING), d / "patching.parquet")


def _artifacts() -> Path:
    d = Path(os.environ.get("VRP_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _driver(tmp_path: Path):
    if not CHROMIUM.is_file():
        pytest.skip(
            f"chromium not found at {CHROMIUM}: apt-get install chromium chromium-driver to run the browser test"
        )
    if not CHROMEDRIVER.is_file():
        pytest.skip(
            f"chromedriver not found at {CHROMEDRIVER}: apt-get install chromium-driver to run the browser test"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]' to run the browser test")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1366,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def test_report_renders_in_headless_chromium(reported, tmp_path):
    from vrp.report import build_report

    run = tmp_path / "with_interventions"
    shutil.copytree(reported, run)
    _interventions(run)
    page = build_report(run, n_cases=4)
    driver = _driver(tmp_path)
    try:
        driver.get(page.resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        # forest, 6 layer figures, 2 x 2 selective, 4 cases, neurons effects, patching
        assert len(images) >= 16, images
        broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
        assert not broken, broken
        ids = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        assert ids == list(SECTIONS)
        toc = driver.execute_script("return Array.from(document.querySelectorAll('nav a')).map(a => a.hash)")
        assert toc == [f"#{s}" for s in SECTIONS]
        # reads on a laptop: nothing wider than a 1366 px window
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 1366
        text = driver.execute_script("return document.body.innerText")
        assert "probe top-16 L2 zero" in text and "Activation patching" in text and "How to read this." in text
        height = driver.execute_script("return document.documentElement.scrollHeight")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1366, "height": height, "scale": 1},
        })  # fmt: skip
    finally:
        driver.quit()
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (_artifacts() / "report.png").write_bytes(png)
