"""`vrp lens train` on a shipped toy-llava run: identity translators are the logit lens, the trained
lens beats it on held-out items at every layer but the last, the files round-trip, the signals and
layer columns reach `vrp analyze` and the report, and what the lens cannot use is a clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.analysis.lens_config import LENS_JSON, SIGNALS_FILE, TRANSLATORS_FILE, TUNED_DIR, LensConfig
from vrp.analysis.lens_run import load_lens_data, read_margins, run_split, train_tuned_lens, tuned_margins
from vrp.analysis.tuned_lens import TunedLens, final_logprobs, readout
from vrp.cli import app
from vrp.runs import storage


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lens") / "run"
    cli_run(out, "--data", "shapesworld:40", "--samples", "0", "--max-new-tokens", "4")
    return out


@pytest.fixture(scope="module")
def adapter():
    from vrp.models import load_adapter

    return load_adapter("toy-llava")


@pytest.fixture(scope="module")
def trained(run_dir):
    res = CliRunner().invoke(app, ["lens", "train", "--run", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert "KL(final || lens)" in res.output
    return run_dir


def _logit_lens_margins(adapter, X: np.ndarray, golds: list) -> np.ndarray:
    """The logit-lens truth margin of every item and stored layer, straight from ``adapter.logit_lens``."""
    from vrp.capture.lens import reference_ids
    from vrp.signals.mechanistic import truth_margin

    out = []
    for x, gold in zip(X, golds, strict=True):
        logits = adapter.logit_lens(x.astype(np.float32)).float()  # [K, V]
        refs = reference_ids(adapter.tokenizer, gold)
        masked = logits.clone()
        masked[:, refs] = -torch.inf
        out.append(truth_margin(logits[:, refs].numpy(), masked.max(-1).values.numpy()))
    return np.stack(out)


@torch.no_grad()
def test_readout_is_the_logit_lens_with_soft_capping(adapter):
    h = torch.randn(3, adapter.text_config.hidden_size)
    np.testing.assert_array_equal(readout(adapter)(h).numpy(), adapter.logit_lens(h).float().numpy())
    adapter.text_config.final_logit_softcapping = 2.0
    try:
        capped = readout(adapter)(h)
        np.testing.assert_allclose(capped.numpy(), adapter.logit_lens(h).float().numpy(), rtol=1e-6)
        assert capped.abs().max() <= 2.0
    finally:
        adapter.text_config.final_logit_softcapping = None


def test_identity_translators_reproduce_the_logit_lens(run_dir, adapter, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    data = load_lens_data(run)
    split, _ = run_split(run, data["ids"], data["y"], data["groups"])
    (run / "probes").mkdir(exist_ok=True)  # the probes' split, when present, is the one used
    (run / "probes" / "split.json").write_text(json.dumps({s: [data["ids"][i] for i in split[s]] for s in split}))
    doc = train_tuned_lens(run, LensConfig(epochs=0), adapter=adapter)
    assert doc["split"]["source"] == "probes/split.json" and doc["residual_layers"] == [0, 1, 2, 3, 4]
    assert doc["kl"]["tuned"] == doc["kl"]["logit"]
    assert all(doc["kl"][lens][s][-1] == 0.0 for lens in ("tuned", "logit") for s in ("train", "val", "test"))
    ids, layers, margin = read_margins(run)
    assert ids == data["ids"] and layers == doc["residual_layers"]
    # exactly the logit lens of the stored (float16) residuals ...
    np.testing.assert_allclose(margin, _logit_lens_margins(adapter, data["X"], data["golds"]), atol=1e-5)
    # ... and the run's own curve.margin (read from the float32 residuals during the run) to float16 rounding
    c_ids, curve = storage.load_stacked(run, "curve.margin")
    curve = curve[np.argsort([ids.index(i) for i in c_ids])]
    np.testing.assert_allclose(margin, curve, atol=5e-3)
    items = pq.read_table(run / "items.parquet").to_pandas()
    sig = pq.read_table(run / TUNED_DIR / SIGNALS_FILE).to_pandas()
    assert sig["id"].tolist() == ids
    np.testing.assert_allclose(sig["tuned_margin_peak"], items["margin_peak"], atol=5e-3)
    clear = (np.abs(curve) > 1e-2).all(axis=1)  # no margin within float16 rounding of 0
    np.testing.assert_array_equal(sig["tuned_margin_positive_from"][clear], items["margin_positive_from"][clear])
    # the target is the model's own distribution: its entropy is the run's first_step_entropy
    logp = final_logprobs(readout(adapter), torch.as_tensor(data["X"][:, -1].astype(np.float32)))
    np.testing.assert_allclose(-(logp.exp() * logp).sum(-1).numpy(), items["first_step_entropy"], atol=1e-3)


def test_trained_lens_beats_the_logit_lens_on_held_out_items(trained):
    doc = json.loads((trained / TUNED_DIR / LENS_JSON).read_text())
    assert doc["split"]["source"].startswith("grouped_stratified_split") and doc["trained_layers"] == [0, 1, 2, 3]
    tuned, logit = doc["kl"]["tuned"], doc["kl"]["logit"]
    for split in (
        "val",
        "test",
    ):  # measured on toy-llava: test KL 2.04 / 0.97 / 0.52 / 0.14 vs 4.71 / 1.81 / 1.52 / 0.43
        assert all(t < lo for t, lo in zip(tuned[split][:-1], logit[split][:-1], strict=True)), (split, tuned, logit)
        assert tuned[split][-1] == logit[split][-1] == 0.0  # the last layer is the model's output
    assert all(e >= 1 for e in doc["fit"]["best_epoch"][:-1]) and doc["fit"]["best_epoch"][-1] is None
    assert doc["config"] == LensConfig().to_dict() and doc["model"]["name"] == "toy-llava"


def test_saved_lens_round_trips_and_reaches_the_analysis_and_report(trained, adapter):
    from vrp.analysis.predictors import derived_signals, layer_table
    from vrp.report.data import load_run
    from vrp.report.layers import layers_section

    lens = TunedLens.load(trained / TUNED_DIR / TRANSLATORS_FILE)
    d = lens.d_model
    np.testing.assert_array_equal(lens.weight[4], np.eye(d, dtype=np.float32))  # the output is not translated
    assert not lens.bias[4].any() and not np.array_equal(lens.weight[2], np.eye(d, dtype=np.float32))
    data = load_lens_data(trained)
    ids, _, margin = read_margins(trained)
    np.testing.assert_allclose(tuned_margins(adapter, lens, data["X"], data["golds"]), margin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(margin[:, -1], _logit_lens_margins(adapter, data["X"], data["golds"])[:, -1], atol=1e-5)
    derived = derived_signals(trained, ids)
    assert {"tuned_margin_peak", "tuned_margin_peak_layer", "tuned_margin_positive_from"} <= set(derived)
    np.testing.assert_allclose(derived["tuned_margin_peak"], np.nanmax(margin, axis=1))
    table = layer_table(trained).to_pandas()
    assert {"tuned_margin_correct_mean", "tuned_margin_wrong_ci_high", "tuned_margin_auroc"} <= set(table)
    assert table["tuned_margin_auroc"].iloc[-1] == pytest.approx(table["margin_auroc"].iloc[-1], abs=1e-3)
    body = layers_section(load_run(trained), n_boot=100).body
    assert "tuned-lens truth margin per layer" in body and "tuned vs logit lens KL per layer" in body


def test_what_the_lens_cannot_use_is_a_clear_error(run_dir, adapter, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        train_tuned_lens(tmp_path / "nothing", adapter=adapter)
    res = CliRunner().invoke(app, ["lens", "train", "--run", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "holds no finished run" in res.output
    no_resid, no_last = tmp_path / "no_resid", tmp_path / "no_last"
    cli_run(no_resid, "--data", "shapesworld:3", "--limit", "3", "--samples", "0", "--no-residuals")
    with pytest.raises(ValueError, match=r"stored no residuals.*--residuals"):
        train_tuned_lens(no_resid, adapter=adapter)
    cli_run(no_last, "--data", "shapesworld:3", "--limit", "3", "--samples", "0", "--store-layers", "0,1")
    with pytest.raises(ValueError, match=r"did not store the last decoder block's residual.*--store-layers all"):
        train_tuned_lens(no_last, adapter=adapter)
    res = CliRunner().invoke(app, ["lens", "train", "--run", str(run_dir), "--model", "toy-qwen2vl"])
    assert res.exit_code == 2 and "is not the one the run used" in res.output


def test_the_study_margin_formation_table_gains_the_tuned_lens(trained):
    import pandas as pd

    from vrp.analysis.config import AnalyzeConfig
    from vrp.report.study import _margin_section
    from vrp.study.formation import margin_formation
    from vrp.study.latex import latex_table
    from vrp.study.tables import StudyRun, margin_tables

    items = pd.read_parquet(trained / "items.parquet")
    run = StudyRun("toy-llava", "shapesworld", trained, {}, items)
    form, curves = margin_tables([run], AnalyzeConfig(n_boot=200))
    assert form["lens"].tolist() == ["logit", "tuned"] and set(curves["lens"]) == {"logit", "tuned"}
    ids, _, margin = read_margins(trained)
    want = margin_formation(margin, items.set_index("id").loc[ids, "correct"].to_numpy(bool), n_boot=200)
    tuned = curves[curves["lens"] == "tuned"]
    np.testing.assert_allclose(tuned["gap"], want["gap"])
    assert form.iloc[1]["peak"] == want["peak"] and form.iloc[1]["emergence"] == want["emergence"]
    assert "toy-llava (tuned lens)" in latex_table("margin_formation", form)
    assert "toy-llava (tuned lens)" in _margin_section(form, curves).body
