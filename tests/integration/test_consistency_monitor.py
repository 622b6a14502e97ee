"""The consistency head end to end on the shipped toy-llava: vrp probe trains it on a run with samples,
vrp analyze reports it, the monitor returns its prediction from the greedy pass, and a run
without samples says why it has none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.cli import app
from vrp.monitor import Monitor, export_monitor
from vrp.monitor.files import read_monitor, write_monitor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a tiny toy run

PROBE_CFG = ProbeConfig(stacked_k=2, mlp_hidden=8, trees=5, max_iter=300)
# the run's own batches, recomposed: the live residual rounds to the stored float16 one; what is
# left is float32 summation order (as for p_correct, tests/integration/test_monitor.py)
RTOL_SAME_BATCH = 1e-5


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    from vrp.analysis.probing import train_probes

    out = tmp_path_factory.mktemp("sc") / "run"
    cli_run(out, "--data", "shapesworld:16", "--samples", "4", "--max-new-tokens", "4", "--seed", "5")
    train_probes(out, PROBE_CFG)
    return out


@pytest.fixture(scope="module")
def data(sampled):
    from vrp.analysis.probing import load_probe_data

    return load_probe_data(sampled)


@pytest.fixture(scope="module")
def head(sampled):
    from vrp.probes.io import load_probe

    return load_probe(sampled / "probes" / "consistency_head")


@pytest.fixture(scope="module")
def items(sampled):
    return pq.read_table(sampled / "items.parquet").to_pandas()


@pytest.fixture(scope="module")
def exported(sampled, tmp_path_factory):
    from vrp.analysis.consistency import analyze_consistency

    analyze_consistency(sampled, AnalyzeConfig(n_boot=200, n_perm=100))
    mdir = tmp_path_factory.mktemp("mon") / "m"
    export_monitor(sampled, mdir, target_coverage=0.8)
    return mdir


@pytest.fixture(scope="module")
def adapter():
    from vrp.models import load_adapter

    return load_adapter("toy-llava")


def test_the_head_is_saved_and_its_predictions_are_the_estimators(sampled, data, head, items):
    from vrp.probes.consistency import ConsistencyHead

    entry = json.loads((sampled / "probes" / "summary.json").read_text())["consistency_head"]
    assert isinstance(head, ConsistencyHead) and head.layer == entry["layer_index"]
    assert entry["residual_layer"] == data["residual_layers"][head.layer] and entry["samples"] == 4
    assert entry["C"] in PROBE_CFG.cs and entry["n_train"] + entry["n_val"] + entry["n_test"] == len(items)
    pred = pq.read_table(sampled / "probes" / "consistency.parquet").to_pandas()
    assert list(pred["id"]) == data["ids"]
    np.testing.assert_array_equal(pred["prediction"], head.predict(data["X"]))  # the saved estimator, stored residuals
    test = pred["split"] == "test"
    np.testing.assert_array_equal(pred.loc[test, "predicted_consistency"], pred.loc[test, "prediction"])
    assert pred.loc[~test, "predicted_consistency"].isna().all()
    split = json.loads((sampled / "probes" / "split.json").read_text())
    assert set(pred.loc[test, "id"]) == set(split["test"])
    s = items.set_index("id").loc[pred["id"], "self_consistency"].to_numpy()
    for side in ("val", "test"):  # the summary's MSE is the head's on that split
        m = (pred["split"] == side).to_numpy()
        assert entry[f"{side}_mse"] == pytest.approx(((pred["prediction"].to_numpy()[m] - s[m]) ** 2).mean())


def test_the_analysis_numbers_equal_their_definitions(sampled, exported, items):
    from vrp.analysis.predictors import derived_signals
    from vrp.stats.paired import paired_auroc_diff

    doc = json.loads((sampled / "analysis" / "consistency.json").read_text())
    pred = pq.read_table(sampled / "probes" / "consistency.parquet").to_pandas().set_index("id")
    probes = pq.read_table(sampled / "probes" / "predictions.parquet").to_pandas().set_index("id")
    test = pred.index[pred["split"] == "test"]
    by_id = items.set_index("id")
    pc, sc = pred.loc[test, "predicted_consistency"].to_numpy(), by_id.loc[test, "self_consistency"].to_numpy()
    pd_, y = probes.loc[test, "probe_dense"].to_numpy(), by_id.loc[test, "correct"].to_numpy().astype(int)
    assert doc["n"] == len(test) and doc["split"] == "test"
    c = doc["correlation"]
    assert c["pearson"]["r"] == pytest.approx(stats.pearsonr(pc, sc).statistic, rel=1e-9)
    ci = stats.pearsonr(pc, sc).confidence_interval(0.95)
    assert [c["pearson"]["ci_low"], c["pearson"]["ci_high"]] == pytest.approx([ci.low, ci.high], rel=1e-9)
    assert c["spearman"]["r"] == pytest.approx(stats.spearmanr(pc, sc).statistic, rel=1e-9)
    assert c["spearman"]["p"] == pytest.approx(stats.spearmanr(pc, sc).pvalue, rel=1e-6)
    assert doc["mse"] == pytest.approx(((pc - sc) ** 2).mean())
    for name, score in (("predicted_consistency", pc), ("self_consistency", sc), ("probe_dense", pd_)):
        assert doc["auroc"][name]["auroc"] == pytest.approx(roc_auc_score(y, score)), name
    for other, score in (("self_consistency", sc), ("probe_dense", pd_)):
        got = doc["paired"][f"predicted_consistency - {other}"]
        want = paired_auroc_diff(pc, score, y, n_boot=200, seed=0)
        assert got["diff"] == pytest.approx(roc_auc_score(y, pc) - roc_auc_score(y, score))
        assert (got["ci_low"], got["ci_high"], got["n"]) == pytest.approx((want.ci_low, want.ci_high, want.n))
        assert got["p_delong"] == pytest.approx(want.p_delong, nan_ok=True)
    # the derived signal the predictor table reads: the head on the test items, NaN elsewhere
    derived = derived_signals(sampled, items["id"])
    np.testing.assert_array_equal(derived.loc[test, "predicted_consistency"], pc)
    assert derived["predicted_consistency"].notna().sum() == len(test)


def test_the_monitor_returns_the_heads_prediction_from_the_greedy_pass(sampled, exported, head, data, adapter, items):
    info = json.loads((exported / "monitor.json").read_text())
    h = info["consistency_head"]
    assert h["residual_layer"] == data["residual_layers"][head.layer] and h["output"] == "predicted_consistency"
    assert h["metrics"]["correlation"]["pearson"]["r"] is not None
    m = Monitor.load(exported).attach(adapter)
    first = items.iloc[:32]  # the run's first two batches of 16, recomposed exactly
    answers = m.ask_many(list(first["image"]), list(first["question"]))
    offline = dict(zip(data["ids"], head.predict(data["X"]), strict=True))  # the head on the residual vrp run stored
    got = np.array([a.predicted_consistency for a in answers])
    np.testing.assert_allclose(got, [offline[i] for i in first["id"]], rtol=RTOL_SAME_BATCH)
    assert [a.text for a in answers] == list(first["answer"])


@pytest.mark.parametrize("same_layer", [True, False])
def test_probe_and_head_on_any_two_layers_are_read_in_one_pass(sampled, exported, head, data, adapter, items, tmp_path,
                                                               same_layer):  # fmt: skip
    """Put the head on the probe's layer (one hook) or on another one (two hooks in the same prefill)."""
    from vrp.probes.io import load_probe

    arrays, doc = read_monitor(exported)
    k = doc["probe"]["layer_index"]
    j = k if same_layer else (k + 2) % len(data["residual_layers"])
    arrays = {**arrays, "consistency.coef": head.coef_[j], "consistency.mean": head.mean_[j],
              "consistency.scale": head.scale_[j], "consistency.intercept": np.asarray([head.intercept_[j]])}  # fmt: skip
    doc["consistency_head"] = {
        **doc["consistency_head"],
        "layer_index": j,
        "residual_layer": data["residual_layers"][j],
    }
    m = Monitor.load(write_monitor(tmp_path / "m", arrays, doc)).attach(adapter)
    assert (m.head_layer == m.residual_layer) == same_layer
    first = items.iloc[:16]
    answers = m.ask_many(list(first["image"]), list(first["question"]))
    pos = [data["ids"].index(i) for i in first["id"]]
    np.testing.assert_allclose([a.predicted_consistency for a in answers], head.predict_layers(data["X"][pos])[:, j],
                               rtol=RTOL_SAME_BATCH)  # fmt: skip
    dense = load_probe(sampled / "probes" / "probe_dense").predict_proba_layers(data["X"][pos])[:, k]
    np.testing.assert_allclose([a.p_correct for a in answers], dense, rtol=RTOL_SAME_BATCH)


def test_cli_ask_returns_predicted_consistency(sampled, exported, items, tmp_path):
    res = CliRunner().invoke(
        app, ["ask", "--monitor", str(exported), "--image", items["image"][0], items["question"][0]]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert set(out) == {"answer", "p_correct", "abstain", "predicted_consistency"}
    assert 0 < out["predicted_consistency"] < 1 and "predicted consistency" in res.output
    folder = sampled / "data"  # batch images are relative to the batch file's folder
    batch = folder / "ask_consistency.jsonl"
    batch.write_text("".join(json.dumps({"id": f"q{i}", "image": str(Path(items["image"][i]).relative_to(folder)),
                                         "question": items["question"][i]}) + "\n" for i in range(3)))  # fmt: skip
    res = CliRunner().invoke(
        app, ["ask", "--monitor", str(exported), "--batch", str(batch), "--out", str(tmp_path / "a")]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "a").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"] and all(0 < r["predicted_consistency"] < 1 for r in rows)
    assert rows[0]["predicted_consistency"] == pytest.approx(out["predicted_consistency"], abs=1e-3)


def test_the_report_shows_the_head(sampled, exported):
    from vrp.report import build_report

    html = build_report(sampled, n_cases=0).read_text()
    assert "Consistency head" in html and "Pearson r" in html and "head - <code>probe_dense</code>" in html


def test_a_run_without_samples_says_why_and_the_probes_still_work(tmp_path, adapter, items):
    from vrp.analysis.consistency import analyze_consistency
    from vrp.report import build_report

    out = tmp_path / "run"
    cli_run(out, "--data", "shapesworld:16", "--samples", "0", "--max-new-tokens", "4", "--seed", "5")
    res = CliRunner().invoke(app, ["probe", "--run", str(out), "--stacked-k", "2"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "consistency head skipped" in text and "--samples 0" in text and "--samples K" in text
    summary = json.loads((out / "probes" / "summary.json").read_text())
    assert "--samples 0" in summary["consistency_head"]["skipped"] and "probe_dense" in summary["probes"]
    assert not (out / "probes" / "consistency_head").exists() and not (out / "probes" / "consistency.parquet").exists()
    assert analyze_consistency(out, AnalyzeConfig(n_boot=10, n_perm=0)) is None
    assert "No consistency head: " in build_report(out, n_cases=0).read_text()
    mdir = tmp_path / "m"
    doc = export_monitor(out, mdir, target_coverage=0.8)  # a monitor without a head, as before
    assert "consistency_head" not in doc
    m = Monitor.load(mdir).attach(adapter)
    a = m.ask(items["image"][0], items["question"][0])
    assert a.predicted_consistency is None and 0 < a.p_correct < 1
    res = CliRunner().invoke(app, ["ask", "--monitor", str(mdir), "--image", items["image"][0], items["question"][0]])
    out_json = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert res.exit_code == 0 and out_json["predicted_consistency"] is None
