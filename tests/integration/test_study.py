"""``vrp study`` end to end on a small ShapesWorld set: the three toys, the tables (pooled and
family rows, LaTeX), the pooled split, the paired tests against their definitions, transfer,
resume, the lock and the Ray engine."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from vrp.config import TOY_MODELS
from vrp.study import StudyConfig, run_study
from vrp.study.runner import process_pair as REAL_PROCESS_PAIR  # taken before any test patches it
from vrp.study.tables import STRUCTURAL, TABLES, load_study, pooled_items, pooled_split

OPTS = ["--samples", "2", "--n-boot", "300", "--n-perm", "200", "--max-new-tokens", "3", "--seed", "1"]
SMALL = dict(samples=2, n_boot=300, n_perm=200, max_new_tokens=3, seed=1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The three shipped toys on 24 ShapesWorld images, through the CLI (tables and report)."""
    from typer.testing import CliRunner

    from vrp.cli import app

    out = tmp_path_factory.mktemp("study") / "s"
    res = CliRunner().invoke(app, ["study", "--out", str(out), "--data", "shapesworld:24", *OPTS])
    assert res.exit_code == 0, res.output
    return out


def _tables(out):
    return {n: pd.read_parquet(out / "tables" / f"{n}.parquet") for n in TABLES}


def test_study_writes_every_table_with_family_and_pooled_rows(study):
    spec = json.loads((study / "study.json").read_text())
    assert spec["study"]["models"] == list(TOY_MODELS) and len(spec["runs"]) == 3
    t = _tables(study)
    for name in TABLES:
        csv = study / "tables" / f"{name}.csv"
        assert csv.is_file() and (study / "tables" / f"{name}.parquet").is_file()
        if not t[name].empty:
            assert len(pd.read_csv(csv)) == len(t[name])
    s = t["structural"]
    for model in (*TOY_MODELS, "pooled"):
        rows = s[(s["model"] == model) & s["scope"].isin(["family", "pooled"])]
        assert sorted(rows["name"]) == sorted(STRUCTURAL), model
    pooled = s[(s["model"] == "pooled") & (s["scope"] == "pooled")]
    n_items = sum(len(pd.read_parquet(study / r["run_dir"] / "items.parquet")) for r in spec["runs"])
    assert (pooled.loc[pooled["name"] == "attn_entropy", "n"] == n_items).all()
    ens = s[s["name"] == "attn_ensemble_pooled"]
    assert set(ens["model"]) == {"pooled", *TOY_MODELS} and ens["auroc"].between(0, 1).all()
    # one Bonferroni / BH family: the whole table
    m = s["p"].notna().sum()
    np.testing.assert_allclose(s["p_bonferroni"].dropna(), np.minimum(1, s["p"].dropna() * m))
    assert set(t["margin_formation"]["model"]) == set(TOY_MODELS)
    assert set(t["margin_curves"]["depth"]) == {0.0, 0.25, 0.5, 0.75, 1.0}
    acc = t["accounting"]
    assert (acc["answered"] + acc["failed"] == acc["items"]).all()
    assert (acc["n_train"] + acc["n_val"] + acc["n_test"] == acc["answered"]).all()
    tests = t["paired_tests"]
    assert set(tests["comparison"]) >= {"best probe vs token confidence", "best probe vs self-consistency",
                                        "best attention summary vs chance"}  # fmt: skip
    assert len(t["probe_vs_confidence"]) == 3 and t["interventions"].empty
    summary = json.loads((study / "summary.json").read_text())
    verdicts = {"reproduces", "does not reproduce", "mixed", "undetermined", "not measured"}
    assert summary["claims"] and all(c["verdict"] in verdicts and c["evidence"] for c in summary["claims"])
    assert summary["probe_wins"]["comparisons"] == 3


def test_latex_tables_are_well_formed(study):
    tex_files = sorted((study / "tables").glob("*.tex"))
    assert {p.stem for p in tex_files} >= {"structural", "margin_formation", "head_to_head", "paired_tests",
                                          "probe_vs_confidence", "transfer", "accounting"}  # fmt: skip
    for p in tex_files:
        tex = p.read_text()
        for env in ("table", "tabular"):
            assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1, p.name
        align = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
        body = tex.split(r"\toprule")[1].split(r"\bottomrule")[0]
        rows = [r for r in body.splitlines() if r.endswith(r"\\")]
        assert len(rows) >= 2, p.name
        for r in rows:  # every row has the tabular's column count; every & in data is escaped
            assert len(re.findall(r"(?<!\\)&", r)) == len(align) - 1, (p.name, r)
            assert not re.search(r"(?<!\\)[_%#$]", r.replace(r"\\", "")), (p.name, r)


def test_pooled_split_keeps_images_together_and_families_stratified(study):
    from vrp.analysis.config import ProbeConfig

    spec, runs = load_study(study)
    pool = pooled_items(runs)
    split = pooled_split(pool, ProbeConfig.from_dict(spec["probe_config"]))
    sides = [set(pool["image_key"].iloc[idx]) for idx in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    # the three toys answered the same ShapesWorld images: one key per image, shared by the families
    assert len(set(pool["image_key"])) == 24
    strata = set(zip(pool["model"], pool["correct"], strict=True))
    for idx in (split.train, split.val, split.test):
        assert set(zip(pool["model"].iloc[idx], pool["correct"].iloc[idx], strict=True)) == strata
    saved = json.loads((study / "tables" / "pooled_split.json").read_text())["shapesworld:24"]
    assert sorted(saved["test"]) == sorted(pool["run"].iloc[split.test] + "/" + pool["id"].iloc[split.test])


def _delong_p(a, b, y):
    """DeLong's two-sided p of AUROC(a) = AUROC(b), from the placements' definition."""

    def placements(s):
        pos, neg = s[y], s[~y]
        v10 = np.array([((neg < x).sum() + 0.5 * (neg == x).sum()) / len(neg) for x in pos])
        v01 = np.array([((pos > x).sum() + 0.5 * (pos == x).sum()) / len(pos) for x in neg])
        return v10, v01

    (a10, a01), (b10, b01) = placements(a), placements(b)
    var = (np.cov(a10, b10)[0, 0] + np.cov(a10, b10)[1, 1] - 2 * np.cov(a10, b10)[0, 1]) / len(a10) + (
        np.cov(a01, b01)[0, 0] + np.cov(a01, b01)[1, 1] - 2 * np.cov(a01, b01)[0, 1]) / len(a01)  # fmt: skip
    return 2 * norm.sf(abs(a10.mean() - b10.mean()) / np.sqrt(var))


def test_paired_tests_match_their_definitions(study):
    tests = _tables(study)["paired_tests"]
    _, runs = load_study(study)
    rng = np.random.default_rng(0)
    checked = 0
    for run in runs:
        test = run.side("test")
        y = test["correct"].to_numpy().astype(bool)
        row = tests[(tests["model"] == run.model) & (tests["comparison"] == "best probe vs token confidence")].iloc[0]
        a, b = test[row["a"]].to_numpy(float), test["token_confidence"].to_numpy(float)
        assert row["auroc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
        assert row["auroc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
        assert row["p_delong"] == pytest.approx(_delong_p(a, b, y), rel=1e-6)
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        diffs = []
        for _ in range(3000):  # brute-force stratified paired bootstrap
            idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
            diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
        lo, hi = np.quantile(diffs, [0.025, 0.975])
        assert row["ci_low"] == pytest.approx(lo, abs=0.05) and row["ci_high"] == pytest.approx(hi, abs=0.05)
        chance = tests[(tests["model"] == run.model) & (tests["comparison"] == "best attention summary vs chance")]
        if len(chance) and pd.notna(chance.iloc[0]["diff"]):
            c = chance.iloc[0]
            assert c["auroc_b"] == 0.5 and c["diff"] == pytest.approx(c["auroc_a"] - 0.5)
        checked += 1
    assert checked == 3


def test_study_report_links_every_run(study):
    html = (study / "report" / "index.html").read_text()
    for section in ("claims", "structural", "margin", "head-to-head", "probe-vs-confidence", "transfer"):
        assert f"id='{section}'" in html
    spec = json.loads((study / "study.json").read_text())
    for r in spec["runs"]:
        assert (study / r["run_dir"] / "report" / "index.html").is_file()
        assert f"../{r['run_dir']}/report/index.html" in html
    assert html.count("data:image/png;base64,") >= 8 and "http://" not in html and "https://" not in html


def test_rerun_skips_finished_runs_and_resumes_the_rest(study, tmp_path, monkeypatch):
    import vrp.study.runner as runner

    out = tmp_path / "copy"
    shutil.copytree(study, out)
    before = _tables(out)
    cfg = StudyConfig.from_dict(json.loads((out / "study.json").read_text())["study"])

    def boom(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(runner, "process_pair", boom)
    events = []
    run_study(cfg, out, events=lambda e, d: events.append(e))
    assert events.count("skip") == 3 and "run" not in events
    after = _tables(out)
    for name in ("structural", "head_to_head", "paired_tests", "transfer", "margin_formation"):
        pd.testing.assert_frame_equal(before[name], after[name])
    # an unfinished run (its analysis lost) is resumed, and only it
    victim = out / json.loads((out / "study.json").read_text())["runs"][1]["run_dir"]
    shutil.rmtree(victim / "analysis")
    calls = []
    monkeypatch.setattr(runner, "process_pair", _recorder(calls))
    run_study(cfg, out)
    assert calls == [TOY_MODELS[1]] and (victim / "analysis" / "summary.json").is_file()


def _recorder(calls):
    def wrapped(run_cfg, *args):
        calls.append(run_cfg.model)
        return REAL_PROCESS_PAIR(run_cfg, *args)

    return wrapped


def test_a_study_directory_in_use_is_refused(tmp_path):
    from vrp.runs.lock import DirectoryLockedError, directory_lock

    cfg = StudyConfig(models=("toy-llava",), datasets=("shapesworld:3",), **SMALL)
    with directory_lock(tmp_path / "s", what="study"):
        import threading

        err = []
        t = threading.Thread(target=lambda: _catch(err, run_study, cfg, tmp_path / "s"))
        t.start()
        t.join()
    assert err and isinstance(err[0], DirectoryLockedError) and "one study at a time" in str(err[0])


def _catch(err, fn, *args):
    try:
        fn(*args)
    except Exception as e:
        err.append(e)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "s"
    cfg = StudyConfig(models=("toy-llava",), datasets=("shapesworld:16", "shapesworld:22"), **SMALL)
    run_study(cfg, out)
    return out, cfg


def test_transfer_diagonal_is_the_probes_own_test_auroc(two_datasets):
    out, _ = two_datasets
    t = pd.read_parquet(out / "tables" / "transfer.parquet")
    assert len(t) == 4 and set(t["train_data"]) == set(t["eval_data"]) == {"shapesworld:16", "shapesworld:22"}
    spec = json.loads((out / "study.json").read_text())
    for r in spec["runs"]:
        own = json.loads((out / r["run_dir"] / "probes" / "summary.json").read_text())["probes"]["probe_dense"]
        diag = t[(t["train_data"] == r["data"]) & (t["eval_data"] == r["data"])].iloc[0]
        assert diag["auroc"] == pytest.approx(own["test_auroc"], abs=1e-12)
        assert diag["ci_low"] <= diag["auroc"] <= diag["ci_high"]
    off = t[t["train_data"] != t["eval_data"]]
    assert off["auroc"].between(0, 1).all() and (off["n"] > 0).all()


def test_ray_study_gives_the_local_tables(two_datasets, tmp_path):
    pytest.importorskip("ray")
    import ray

    local, cfg = two_datasets
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_study(StudyConfig.from_dict({**cfg.to_dict(), "engine": "ray", "workers": 2}), tmp_path / "ray")
    finally:
        ray.shutdown()
    a, b = _tables(local), _tables(tmp_path / "ray")
    for name in ("structural", "head_to_head", "paired_tests", "transfer", "accounting", "margin_formation"):
        x, y = a[name].drop(columns=["run"], errors="ignore"), b[name].drop(columns=["run"], errors="ignore")
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        for col in x.columns:
            if pd.api.types.is_float_dtype(x[col]):
                np.testing.assert_allclose(x[col], y[col], atol=1e-4, err_msg=f"{name}.{col}")
            else:
                assert x[col].tolist() == y[col].tolist(), f"{name}.{col}"


def test_a_failing_pair_is_reported_and_the_rest_is_kept(tmp_path):
    from typer.testing import CliRunner

    from vrp.cli import app

    out = tmp_path / "s"
    bad = str(tmp_path / "missing" / "items.jsonl")
    res = CliRunner().invoke(app, ["study", "--out", str(out), "--model", "toy-llava", "--data", "shapesworld:8",
                                   "--data", bad, *OPTS])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "1 run(s) of the study" in res.output and "missing" in res.output
    failures = json.loads((out / "failures.json").read_text())
    assert len(failures) == 1 and "missing" in next(iter(failures.values()))
    acc = pd.read_parquet(out / "tables" / "accounting.parquet").set_index("data")
    assert acc.loc["shapesworld:8", "status"] == "complete" and acc.loc[bad, "status"].startswith("failed: ")
    assert (out / "report" / "index.html").is_file() and (out / "summary.json").is_file()
