"""The sparse-circuit view (vrp.analysis.units): shares and shifts recomputed from the stored arrays by
independent code, a planted reliability unit found at the top with its shift, the study's concentration row."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from safetensors import safe_open

from vrp.analysis.config import AnalyzeConfig
from vrp.analysis.units import mean_shift_ci, nonzero_fraction, top_share, top_units, unit_table, write_units
from vrp.config import ConfigError
from vrp.probes.io import load_probe
from vrp.runs import storage
from vrp.runs.pipeline import summarize
from vrp.runs.rundir import atomic_write_json, items_schema, write_table
from vrp.signals.catalog import NAMES

PLANTED, SHIFT, D, N_BLOCKS = 7, 3.0, 24, 2  # unit 7 of residual layer 2 carries the label: +3 when correct
GRID = (3, 4)


def planted_run(root: Path, n: int = 240, seed: int = 0, region: bool = True, probes: bool = True) -> Path:
    """A run directory as ``vrp run`` writes it (no model): random signals, residuals [n, 3, 24] of noise except
    unit 7 of the last residual layer, 10 + 3 * correct + N(0, 1); two questions per image; two shards.
    With ``probes``, ``probes/`` holds the split and a sparse probe fitted as ``vrp probe`` fits it."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    (run / "data").mkdir(parents=True)
    correct = rng.random(n) < 0.6
    resid = rng.normal(size=(n, N_BLOCKS + 1, D)).astype(np.float32)
    resid[:, -1, PLANTED] = 10 + SHIFT * correct + rng.normal(size=n)
    rows, maps = [], []
    for i in range(n):
        img = run / "data" / f"{i // 2:03d}.png"
        if i % 2 == 0:
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(img)
        row = {"id": f"it-{i:03d}", "task": "existence" if i % 2 else "counting", "question": f"question {i}?",
               "answer": "yes", "gold": ["yes" if correct[i] else "no"], "score": float(correct[i]),
               "correct": bool(correct[i]), "image": str(img), "n_answer_tokens": 1, "meta": "{}", "samples": []}  # fmt: skip
        for name in NAMES:
            row[name] = float(rng.normal())
        row["token_confidence"] = float(rng.uniform(0.05, 0.95))
        row["attn_region_ratio"] = float(rng.lognormal()) if region else float("nan")
        row["attn_pointing_hit"] = float(rng.random() < 0.5) if region else float("nan")
        row["attn_secondary"] = float(rng.integers(0, 3))
        row["attn_entropy"] = float(rng.uniform(0.5, 2.5))
        rows.append(row)
        maps.append(rng.dirichlet(np.ones(GRID[0] * GRID[1]), N_BLOCKS).reshape(N_BLOCKS, *GRID).astype(np.float32))
    for start, end in ((0, n // 2), (n // 2, n)):
        arrays = {"residual": resid[start:end].astype(np.float16),
                  "curve.margin": rng.normal(size=(end - start, N_BLOCKS + 1)).astype(np.float32),
                  "curve.lens_top_id": rng.integers(0, 50, (end - start, N_BLOCKS + 1)),
                  **{f"attention.{r}": maps[start + r] for r in range(end - start)}}  # fmt: skip
        for col in ("attn_region_ratio", "attn_pointing_hit", "attn_secondary", "attn_entropy"):
            arrays[f"curve.{col}"] = np.repeat([[r[col]] for r in rows[start:end]], N_BLOCKS, 1).astype(np.float32)
        table = pa.Table.from_pylist(rows[start:end], schema=items_schema())
        storage.write_shard(run, start, end, table, arrays, [], {"stored_layers": [0, 1], "n_layers": N_BLOCKS})
    write_table(run / "items.parquet", pa.Table.from_pylist(rows, schema=items_schema()))
    atomic_write_json(run / "manifest.json", {
        "status": "complete", "model": {"name": "planted", "model_type": "llava", "path": str(root / "nomodel")},
        "data": {"format": "generic"}, "config": {"seed": 0, "samples": 0},
        "counts": {"items": n, "answered": n, "failed": 0}, "accuracy": summarize(rows),
    })  # fmt: skip
    if probes:
        fit_sparse_probe(run)
    return run


def fit_sparse_probe(run: Path) -> None:
    """``probes/`` as ``vrp probe`` writes it for the logistic probes: the grouped split, the L2 and L1 sweeps (C
    chosen per layer on validation), the layer with the best validation AUROC (split.json, summary.json,
    probe_dense/, probe_sparse/)."""
    from vrp.probes.io import save_probe
    from vrp.probes.linear import auroc, nan_argmax, sweep
    from vrp.probes.split import grouped_stratified_split

    items = pq.read_table(run / "items.parquet").to_pandas()
    ids, X = storage.load_stacked(run, "residual")
    X = X[np.argsort(np.array([list(items["id"]).index(i) for i in ids]))]
    y = items["correct"].to_numpy().astype(np.int64)
    split = grouped_stratified_split(y, items["image"].to_numpy(), seed=0)
    tr, va, te = split.train, split.val, split.test
    entries = {}
    for penalty, name in (("l2", "dense"), ("l1", "sparse")):
        res = sweep(X[tr], y[tr], X[va], y[va], penalty=penalty, Cs=(0.01, 0.1, 1.0), max_iter=1000)
        layer = int(nan_argmax(res.best_val_auroc))
        test_by_layer = auroc(res.model.predict_proba_layers(X[te]), y[te]).tolist()
        res.model.set_params(layer=layer)
        save_probe(res.model, run / "probes" / f"probe_{name}")
        entries[f"probe_{name}"] = {
            "layer_index": layer, "residual_layer": layer, "C": float(res.best_C[layer]),
            "best_C_by_layer": np.asarray(res.best_C).tolist(), "val_auroc": float(res.best_val_auroc[layer]),
            "test_auroc": test_by_layer[layer], "val_auroc_by_layer": res.best_val_auroc.tolist(),
            "test_auroc_by_layer": test_by_layer,
        }  # fmt: skip
    entries["probe_sparse"]["nonzero_units"] = np.flatnonzero(res.model.coef_[layer]).tolist()
    atomic_write_json(run / "probes" / "split.json", {s: [items["id"][i] for i in idx] for s, idx in
                                                      (("train", tr), ("val", va), ("test", te))})  # fmt: skip
    atomic_write_json(run / "probes" / "summary.json", {"residual_layers": [0, 1, 2], "n": len(y), "probes": entries})


# ---- pure functions ------------------------------------------------------------------------------


def test_shares_and_fractions_match_a_direct_count():
    rng = np.random.default_rng(1)
    coef = rng.laplace(size=(4, 50)) * (rng.random((4, 50)) < 0.3)
    coef[2] = 0.0  # a layer without a unit: undefined shares
    frac = nonzero_fraction(coef)
    for j in range(4):
        assert frac[j] == sum(1 for w in coef[j] if w != 0) / 50
        mags = sorted((abs(float(w)) for w in coef[j]), reverse=True)
        for k in (1, 5, 10, 100):
            got = top_share(coef, k)[j]
            if j == 2:
                assert np.isnan(got)
            else:
                assert got == pytest.approx(sum(mags[:k]) / sum(mags))
    assert top_share(coef, 100)[0] == pytest.approx(1.0)


def test_top_units_are_ordered_by_magnitude_skip_zeros_and_break_ties_by_index():
    w = np.array([0.0, -2.0, 0.5, 2.0, 0.0, -0.1])
    assert top_units(w, 10).tolist() == [1, 3, 2, 5]  # |-2| = |2|: the lower index first; zeros never
    assert top_units(w, 2).tolist() == [1, 3]
    assert top_units(np.zeros(5), 3).size == 0


def test_mean_shift_ci_against_a_plain_bootstrap():
    rng = np.random.default_rng(2)
    xc = rng.normal(1.0, 1.0, size=(150, 2))
    xw = rng.normal(0.0, 2.0, size=(60, 2))
    s = mean_shift_ci(xc, xw, 4000, 0.95, np.random.default_rng(0))
    np.testing.assert_allclose(s["mean_correct"], xc.mean(0))
    np.testing.assert_allclose(s["shift"], xc.mean(0) - xw.mean(0))
    # independent code: resample each group with replacement, percentile interval
    r2 = np.random.default_rng(99)
    boot = np.array([xc[r2.integers(0, 150, 150)].mean(0) - xw[r2.integers(0, 60, 60)].mean(0) for _ in range(4000)])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(s["ci_low"], lo, atol=0.06)
    np.testing.assert_allclose(s["ci_high"], hi, atol=0.06)
    assert (s["ci_low"] < s["shift"]).all() and (s["shift"] < s["ci_high"]).all()
    # constant groups: the CI collapses on the difference; too few items or no resampling: no CI
    flat = mean_shift_ci(np.full((5, 1), 2.0), np.full((4, 1), 0.5), 200, 0.95, np.random.default_rng(0))
    assert flat["ci_low"][0] == pytest.approx(1.5) and flat["ci_high"][0] == pytest.approx(1.5)
    assert np.isnan(mean_shift_ci(xc, xw[:1], 200, 0.95, np.random.default_rng(0))["ci_low"]).all()
    assert np.isnan(mean_shift_ci(xc, xw, 0, 0.95, np.random.default_rng(0))["ci_high"]).all()


def test_analyze_config_validates_the_unit_options():
    assert AnalyzeConfig().units_top == 10 and AnalyzeConfig().units_layers is None
    assert AnalyzeConfig.from_dict({"units_layers": [1, -1]}).units_layers == (1, -1)
    with pytest.raises(ConfigError):
        AnalyzeConfig(units_top=0)


# ---- a run with a planted unit --------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return planted_run(tmp_path_factory.mktemp("units"))


def _test_activations(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent of vrp's readers: the residual of the test items straight from the safetensors files."""
    test = json.loads((run / "probes" / "split.json").read_text())["test"]
    label = pq.read_table(run / "items.parquet").to_pandas().set_index("id")["correct"]
    got = {}
    for p in sorted((run / "shards").glob("*.safetensors")):
        with safe_open(str(p), framework="np") as f:
            for i, x in zip(json.loads(f.metadata()["ids"]), f.get_tensor("residual"), strict=True):
                got[i] = x
    return np.stack([got[i] for i in test]).astype(np.float64), label.loc[test].to_numpy().astype(bool)


def test_the_planted_unit_is_found_at_the_top_with_its_shift(run):
    entry = write_units(run, AnalyzeConfig(n_boot=2000, units_top=5))
    assert entry["available"] and entry["chosen_residual_layer"] == 2
    t = pq.read_table(run / "analysis" / "units.parquet").to_pandas()
    top = t[t["chosen"]].sort_values("rank").iloc[0]
    assert top["unit"] == PLANTED and top["residual_layer"] == 2 and top["coef"] > 0 and top["sign"] == "correct"
    X, y = _test_activations(run)
    x = X[:, 2, PLANTED]
    assert top["mean_correct"] == pytest.approx(x[y].mean()) and top["mean_wrong"] == pytest.approx(x[~y].mean())
    assert top["shift"] == pytest.approx(x[y].mean() - x[~y].mean())
    assert abs(top["shift"] - SHIFT) < 0.8 and top["shift_ci_low"] < SHIFT < top["shift_ci_high"]
    probe = load_probe(run / "probes" / "probe_sparse")
    assert top["shift_sd"] == pytest.approx(top["shift"] / probe.scale_[2, PLANTED])
    assert (top["n_correct"], top["n_wrong"]) == (int(y.sum()), int((~y).sum()))
    # every listed unit: its shift recomputed from the arrays, its share of |coef| from the probe
    w = np.abs(probe.coef_[2])
    for _, r in t.iterrows():
        xu = X[:, r["residual_layer"], r["unit"]]
        assert r["shift"] == pytest.approx(xu[y].mean() - xu[~y].mean())
        assert r["share"] == pytest.approx(w[r["unit"]] / w.sum())
    assert t["rank"].tolist() == list(range(1, len(t) + 1)) and (np.diff(t["abs_coef"]) <= 0).all()


def test_units_json_recomputed_from_the_probe(run):
    write_units(run, AnalyzeConfig(n_boot=100))
    s = json.loads((run / "analysis" / "units.json").read_text())
    coef = load_probe(run / "probes" / "probe_sparse").coef_
    assert [r["residual_layer"] for r in s["layers"]] == [0, 1, 2]
    for j, r in enumerate(s["layers"]):
        assert r["n_nonzero"] == int(np.count_nonzero(coef[j])) and r["n_units"] == D
        assert r["frac_nonzero"] == pytest.approx(np.count_nonzero(coef[j]) / D)
        mags = sorted(np.abs(coef[j]).tolist(), reverse=True)
        if sum(mags):
            assert r["top1_share"] == pytest.approx(mags[0] / sum(mags))
            assert r["top5_share"] == pytest.approx(sum(mags[:5]) / sum(mags))
    assert s["chosen"] == s["layers"][2] and "standardized" in s["coef_units"] and "raw" in s["activation_units"]
    assert s["chosen"]["top1_share"] > 0.5  # one unit carries the boundary


def test_each_unit_row_carries_its_layers_summary(run):
    table, summary = unit_table(run, AnalyzeConfig(n_boot=20, units_layers=(1,)))
    t = table.to_pandas()
    coef = load_probe(run / "probes" / "probe_sparse").coef_
    by_layer = {r["residual_layer"]: r for r in summary["layers"]}
    assert set(t["residual_layer"]) == {1, 2}
    for _, r in t.iterrows():
        j = int(r["residual_layer"])
        mags = np.sort(np.abs(coef[j]))[::-1]
        assert r["layer_n_nonzero"] == np.count_nonzero(coef[j]) and r["layer_frac_nonzero"] == pytest.approx(
            np.count_nonzero(coef[j]) / D
        )
        assert r["layer_top5_share"] == pytest.approx(mags[:5].sum() / mags.sum())
        assert r["layer_C"] == by_layer[j]["C"] and r["layer_top10_share"] == by_layer[j]["top10_share"]


def test_asked_layers_are_listed_and_bad_ones_refused(run):
    table, summary = unit_table(run, AnalyzeConfig(n_boot=50, units_layers=(1, -1)))
    assert summary["residual_layers_shown"] == [2, 1]  # the chosen layer first; -1 is the chosen one
    t = table.to_pandas()
    assert set(t["residual_layer"]) <= {1, 2} and not t[t["residual_layer"] == 1]["chosen"].any()
    with pytest.raises(ValueError, match="residual layer 7"):
        unit_table(run, AnalyzeConfig(n_boot=50, units_layers=(7,)))


def test_no_sparse_probe_is_a_reason_not_an_error(tmp_path):
    run = planted_run(tmp_path, n=40, probes=False)
    (run / "analysis").mkdir()
    (run / "analysis" / "units.parquet").write_bytes(b"stale")
    entry = write_units(run, AnalyzeConfig(n_boot=10))
    assert not entry["available"] and "vrp probe" in entry["reason"]
    assert json.loads((run / "analysis" / "units.json").read_text())["available"] is False
    assert not (run / "analysis" / "units.parquet").exists()
    # the reason names what the run lacks: probes skipped (one class), or no residuals stored at all
    (run / "probes").mkdir(exist_ok=True)
    atomic_write_json(run / "probes" / "skipped.json", {"reason": "the label has one class"})
    assert "probes were skipped (the label has one class)" in write_units(run, AnalyzeConfig(n_boot=10))["reason"]
    manifest = json.loads((run / "manifest.json").read_text())
    atomic_write_json(run / "manifest.json", {**manifest, "config": {**manifest["config"], "store_residuals": False}})
    assert "stored no residuals (`vrp run --no-residuals`)" in write_units(run, AnalyzeConfig(n_boot=10))["reason"]


# ---- the study's concentration row -----------------------------------------------------------------


def test_concentration_row_and_its_latex(run):
    from vrp.study.concentration import concentration_table
    from vrp.study.latex import latex_table

    probes = json.loads((run / "probes" / "summary.json").read_text())
    runs = [SimpleNamespace(model="planted", data="synthetic", run_dir=run, probes=probes, probes_skipped=""),
            SimpleNamespace(model="bare", data="synthetic", run_dir=run, probes=None, probes_skipped="")]  # fmt: skip
    df = concentration_table(runs)
    coef = load_probe(run / "probes" / "probe_sparse").coef_[2]
    r = df.iloc[0]
    assert (r["residual_layer"], r["n_units"], r["n_nonzero"]) == (2, D, np.count_nonzero(coef))
    assert r["depth"] == 1.0 and r["top1_share"] == pytest.approx(np.abs(coef).max() / np.abs(coef).sum())
    assert pd.isna(df.iloc[1]["frac_nonzero"]) and "vrp probe" in df.iloc[1]["undefined"]
    tex = latex_table("concentration", df)
    assert r"\label{tab:vrp-concentration}" in tex and "planted" in tex and "bare" not in tex
    assert latex_table("concentration", concentration_table([])) == ""


def test_study_report_concentration_section(run):
    from vrp.report.units import concentration_section
    from vrp.study.concentration import concentration_table

    probes = json.loads((run / "probes" / "summary.json").read_text())
    runs = [SimpleNamespace(model="planted", data="synthetic", run_dir=run, probes=probes, probes_skipped=""),
            SimpleNamespace(model="skipped", data="synthetic", run_dir=run, probes=None, probes_skipped="one class")]  # fmt: skip
    df = concentration_table(runs)
    body = concentration_section(df).body
    share = f"{df.iloc[0]['top5_share']:.0%}"
    assert "Most concentrated: <strong>planted</strong>" in body and share in body and "one class" in body
    assert "No run has a sparse probe yet" in concentration_section(pd.DataFrame()).body
