"""The supervision record from checkpoint to adapter to manifest to the ``_sup`` / ``_unsup``
derived signals of ``vrp analyze``, checked against the run's stored per-head curves."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import vrp
from tests.helpers import cli_run
from vrp.analysis.config import AnalyzeConfig
from vrp.analysis.head_groups import SOURCE, write_head_groups
from vrp.analysis.heads import HEAD_FEATURES
from vrp.runs import storage


def test_adapters_expose_the_record(random_toy_dirs):
    assert vrp.load("toy-llava").supervised_heads == ((2, 0), (2, 1), (2, 2))
    assert vrp.load("toy-qwen2vl").supervised_heads == ((2, 0), (2, 1))
    assert vrp.load(random_toy_dirs["llava"]).supervised_heads == ()  # no record: a hub-like model


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("hg") / "run"
    cli_run(run, "--data", "shapesworld:12", "--samples", "0", "--max-new-tokens", "3", "--seed", "5")
    return run


def test_analyze_splits_the_heads_by_the_manifests_record(toy_run):
    from vrp.analysis.predictors import analyze

    manifest = json.loads((toy_run / "manifest.json").read_text())
    assert manifest["model"]["supervised_heads"] == [[2, 0], [2, 1], [2, 2]]
    summary = analyze(toy_run, AnalyzeConfig(n_boot=50, n_perm=50))
    assert summary["head_groups"]["supervised_heads"] == [[2, 0], [2, 1], [2, 2]]
    got = pd.read_parquet(toy_run / SOURCE).set_index("id")
    for f in HEAD_FEATURES:
        ids, arr = storage.load_stacked(toy_run, f"curve.head_attn_{f}")  # [n, L, H]
        arr = arr.astype(np.float64)
        sup = arr[:, 2, :3]  # block 2, heads 0-2: what toy-llava's recipe supervised
        unsup = np.concatenate([arr[:, [0, 1, 3]].reshape(len(ids), -1), arr[:, 2, 3:]], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an item whose cells are all NaN
            np.testing.assert_allclose(got.loc[ids, f"attn_{f}_sup"], np.nanmean(sup, axis=1))
            np.testing.assert_allclose(got.loc[ids, f"attn_{f}_unsup"], np.nanmean(unsup, axis=1))
    names = set(pd.DataFrame(summary["predictors"])["name"])
    assert {"attn_entropy_sup", "attn_entropy_unsup"} <= names


def test_a_run_without_the_record_gets_no_head_groups(toy_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(toy_run, old)
    (old / SOURCE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["model"]["supervised_heads"]  # a run made before the record
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert write_head_groups(old) is None and not (old / SOURCE).exists()
    manifest["model"]["supervised_heads"] = []  # a model without supervision: all heads unsupervised
    (old / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(old / "analysis")  # write_head_groups alone, before any vrp analyze
    write_head_groups(old)
    got = pd.read_parquet(old / SOURCE).set_index("id")
    ids, arr = storage.load_stacked(old, "curve.head_attn_entropy")
    np.testing.assert_allclose(got.loc[ids, "attn_entropy_unsup"], np.nanmean(arr.astype(np.float64).reshape(len(ids), -1),
                                                                                   axis=1))  # fmt: skip
    assert got["attn_entropy_sup"].isna().all()
