"""`vrp run` end to end on a small generated set (random-weight toy model, offline)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.helpers import assert_tables_equal
from vrp.cli import app
from vrp.runs.rundir import items_schema
from vrp.world.dataset import write_dataset

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["run", "--answer-only", *args], catch_exceptions=False)


def test_run_end_to_end_rows_columns_and_manifest(random_toy_dirs, tmp_path):
    out = tmp_path / "run"
    res = _run(
        "--model", random_toy_dirs["paligemma"], "--data", "shapesworld:6", "--out", str(out), "--batch-size", "4"
    )
    assert res.exit_code == 0, res.output
    src = [json.loads(x) for x in (out / "data" / "items.jsonl").read_text().splitlines()]
    table = pq.read_table(out / "items.parquet")
    assert table.schema.equals(items_schema())
    df = table.to_pandas()
    assert len(df) == len(src)
    assert list(df["id"]) == [r["id"] for r in src]
    assert {"id", "question", "answer", "gold", "score", "correct", "task"} <= set(df.columns)
    assert df["correct"].equals(df["score"] >= 0.5)
    assert [list(g) for g in df["gold"]] == [r["answers"] for r in src]
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete"
    assert {k: m["counts"][k] for k in ("items_loaded", "answered", "failed")} == {
        "items_loaded": len(src), "answered": len(src), "failed": 0
    }  # fmt: skip
    assert m["config"]["data"] == "shapesworld:6"
    assert m["model"]["model_type"] == "paligemma" and len(m["model"]["sha256"]) == 64
    acc = m["accuracy"]["overall"]
    assert acc["correct"] == int(df["correct"].sum()) and acc["n"] == len(df)
    lo, hi = acc["ci95"]
    assert lo <= acc["accuracy"] <= hi


def test_run_limit_resume_noop_and_refuses_other_config(random_toy_dirs, tmp_path):
    out = tmp_path / "run"
    assert (
        _run(
            "--model", random_toy_dirs["llava"], "--data", "shapesworld:5", "--out", str(out), "--limit", "3"
        ).exit_code
        == 0
    )
    assert len(pd.read_parquet(out / "items.parquet")) == 3
    before = pq.read_table(out / "items.parquet")
    res = _run("--model", random_toy_dirs["llava"], "--data", "shapesworld:5", "--out", str(out), "--limit", "3")
    assert res.exit_code == 0, res.output  # same setup: nothing left to do, results unchanged
    assert_tables_equal(pq.read_table(out / "items.parquet"), before)
    res = _run("--model", random_toy_dirs["llava"], "--data", "shapesworld:5", "--out", str(out))
    assert res.exit_code == 2 and "different setup" in res.output and "limit: 3 -> None" in res.output
    res = _run(
        "--model", random_toy_dirs["llava"], "--data", "shapesworld:5", "--out", str(out), "--force", "--limit", "2"
    )
    assert res.exit_code == 0 and len(pd.read_parquet(out / "items.parquet")) == 2


def test_bad_images_are_recorded_and_others_go_on(random_toy_dirs, tmp_path):
    data = tmp_path / "ds"
    write_dataset(data, n_images=4, seed=2)
    recs = [json.loads(x) for x in (data / "items.jsonl").read_text().splitlines()]
    images = sorted({r["image"] for r in recs})
    (data / images[0]).unlink()  # missing
    (data / images[1]).write_bytes(b"this is not a png")  # not an image
    png = (data / images[2]).read_bytes()
    (data / images[2]).write_bytes(png[: len(png) // 2])  # truncated
    with (data / "items.jsonl").open("a") as f:
        f.write("{broken json\n")
    out = tmp_path / "run"
    res = _run("--model", random_toy_dirs["qwen2vl"], "--data", str(data / "items.jsonl"), "--out", str(out))
    assert res.exit_code == 0, res.output
    fails = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    bad_imgs = set(images[:3])
    expected_img_fail = {r["id"] for r in recs if r["image"] in bad_imgs}
    assert {f["id"] for f in fails if f["stage"] == "image"} == expected_img_fail
    load_fails = [f for f in fails if f["stage"] == "load"]
    assert len(load_fails) == 1 and load_fails[0]["source"].endswith(f":{len(recs) + 1}")
    df = pd.read_parquet(out / "items.parquet")
    assert set(df["id"]) == {r["id"] for r in recs} - expected_img_fail
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == len(fails)


@pytest.mark.parametrize(
    "model_arg, needle",
    [("nonexistent-model-dir", "does not exist"), ("__unsupported__", "supported model types")],
)
def test_bad_model_is_a_clear_error(tmp_path, model_arg, needle):
    if model_arg == "__unsupported__":
        d = tmp_path / "m"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
        model_arg = str(d)
    res = _run("--model", model_arg, "--data", "shapesworld:2", "--out", str(tmp_path / "run"))
    assert res.exit_code == 2
    assert needle in res.output


def test_data_in_no_format_is_a_clear_error(random_toy_dirs, tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("hello\nworld\n")
    res = _run("--model", random_toy_dirs["llava"], "--data", str(bad), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and "not in any supported format" in res.output
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_a_supported_family_with_missing_files_is_a_clear_error(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))  # no processor, no weights
    res = _run("--model", str(d), "--data", "shapesworld:2", "--out", str(tmp_path / "run"))
    assert res.exit_code == 2, res.output
    assert "cannot load the qwen2_5_vl model" in res.output and "Traceback" not in res.output
