"""`vrp probe` and `vrp analyze` end to end on a shipped toy-llava run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.cli import app
from vrp.signals.catalog import NAMES


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    out = tmp_path_factory.mktemp("ana") / "run"
    runner = CliRunner()
    cli_run(out, "--data", "shapesworld:40", "--samples", "4", "--max-new-tokens", "4", "--seed", "5")
    res = runner.invoke(app, ["probe", "--run", str(out), "--stacked-k", "3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", "--run", str(out), "--n-boot", "2000", "--n-perm", "2000"])
    assert res.exit_code == 0, res.output
    assert "predictors of correctness" in res.output
    return out


def test_probes_are_saved_split_by_image_and_reload_identically(analyzed):
    from vrp.analysis.probing import load_probe_data
    from vrp.probes.io import load_probe

    summary = json.loads((analyzed / "probes" / "summary.json").read_text())
    assert set(summary["probes"]) == {
        "probe_dense", "probe_sparse", "probe_stacked", "probe_mlp", "attn_ensemble_gbt", "attn_ensemble_rf",
        "attn_heads_probe", "attn_heads_probe_gold",
    }  # fmt: skip
    split = json.loads((analyzed / "probes" / "split.json").read_text())
    items = pq.read_table(analyzed / "items.parquet").to_pandas().set_index("id")
    images = {s: set(items.loc[ids, "image"]) for s, ids in split.items()}
    assert not (images["train"] & images["val"] or images["train"] & images["test"] or images["val"] & images["test"])
    n = sum(len(v) for v in split.values())
    assert n == len(items) and abs(len(split["train"]) / n - 0.6) < 0.1
    preds = pq.read_table(analyzed / "probes" / "predictions.parquet").to_pandas()
    data = load_probe_data(analyzed)
    layer = summary["probes"]["probe_dense"]["layer_index"]
    dense = load_probe(analyzed / "probes" / "probe_dense")
    assert dense.layer == layer  # the saved probe answers with the chosen layer
    np.testing.assert_array_equal(dense.predict_proba(data["X"])[:, 1], preds["probe_dense"].to_numpy())
    mlp = load_probe(analyzed / "probes" / "probe_mlp")
    np.testing.assert_allclose(mlp.predict_proba(data["X"][:, layer])[:, 1], preds["probe_mlp"].to_numpy(), rtol=1e-6)
    # chosen on validation: the reported layer is the validation argmax
    val = summary["probes"]["probe_dense"]["val_auroc_by_layer"]
    val = np.asarray(val, dtype=float)  # null (undefined) -> NaN
    assert layer == int(np.nanargmax(val)) and np.isnan(val[0])  # the embedding layer is the same for every item


def test_predictor_table_values(analyzed):
    t = pq.read_table(analyzed / "analysis" / "predictors.parquet").to_pandas().set_index("name")
    assert set(NAMES) | {"probe_dense", "probe_stacked", "attn_ensemble_gbt"} <= set(t.index)
    items = pq.read_table(analyzed / "items.parquet").to_pandas()
    y = items["correct"].astype(int)
    # oracle: sklearn on the same column, oriented by the documented direction
    assert t.loc["margin_last", "auroc"] == pytest.approx(roc_auc_score(y, items["margin_last"]), abs=1e-9)
    assert t.loc["first_step_entropy", "auroc"] == pytest.approx(roc_auc_score(y, -items["first_step_entropy"]))
    assert t.loc["margin_last", "auroc"] > 0.9  # the first token's margin decides single-token answers
    defined = t[t["undefined"] == ""]
    assert (defined["ci_low"] <= defined["auroc"]).all() and (defined["auroc"] <= defined["ci_high"]).all()
    p = t["p"].dropna()
    assert (t.loc[p.index, "p_bonferroni"] >= p - 1e-12).all()
    assert (t.loc[p.index, "p_bh"] <= t.loc[p.index, "p_bonferroni"] + 1e-12).all()
    # a constant signal is reported undefined with its reason, never as a fake 0.5
    const = [n for n in NAMES if items[n].nunique(dropna=True) <= 1]
    for name in const:
        assert t.loc[name, "undefined"] and np.isnan(t.loc[name, "auroc"])
    probe_n = t.loc["probe_dense", "n"]
    assert probe_n < len(items)  # probe rows are measured on the test split only
    assert 0 <= t.loc["token_confidence", "ece"] <= 1
    # what each row reads besides the model: every truth margin the gold answer, region signals the gold box
    assert t.loc["margin_last", "needs"] == "gold answer" and t.loc["attn_region_mass", "needs"] == "gold region"
    assert t.loc["token_confidence", "needs"] == "" and t.loc["probe_dense", "needs"] == ""
    margin_rows = [n for n in NAMES if n.startswith("margin_") or n == "mlp_share"]
    assert (t.loc[margin_rows, "needs"] == "gold answer").all()


def test_layer_curves(analyzed):
    lt = pq.read_table(analyzed / "analysis" / "layers.parquet").to_pandas()
    assert list(lt["residual_layer"]) == [0, 1, 2, 3, 4]
    for label in ("correct", "wrong"):
        m, lo, hi = (lt[f"margin_{label}_{k}"] for k in ("mean", "ci_low", "ci_high"))
        assert (lo <= m + 1e-9).all() and (m <= hi + 1e-9).all()
    assert lt["margin_correct_mean"].iloc[-1] > 0 > lt["margin_wrong_mean"].iloc[-1]
    # residual 0 is the embedding of the decision token: the same for every item, so the probe's
    # scores are constant and its AUROC is undefined (NaN), never a fake 0.5
    assert np.isnan(lt["probe_dense_test_auroc"].iloc[0])
    assert lt["probe_dense_test_auroc"].iloc[1:].between(0, 1).all()


def test_json_files_are_strict(analyzed):
    """Undefined numbers are null, never a bare NaN that strict JSON parsers reject."""

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    for path in [
        analyzed / "manifest.json",
        analyzed / "probes" / "summary.json",
        analyzed / "analysis" / "summary.json",
    ]:
        json.loads(path.read_text(), parse_constant=refuse)
    val = json.loads((analyzed / "probes" / "summary.json").read_text())["probes"]["probe_dense"]["val_auroc_by_layer"]
    assert val[0] is None  # the embedding layer: undefined
