"""Runs that survive: SIGKILL at the worst moments, SIGTERM, resume, refusal of a changed setup.

Every run here is a subprocess (``vrp run`` as a user runs it) on a random-weight toy LLaVA,
so a kill really kills and a resumed run really starts from the files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import assert_tables_equal, cli_run
from vrp.runs import storage
from vrp.runs.pipeline import batches

ARGS = ["--data", "shapesworld:3", "--batch-size", "2", "--samples", "3", "--max-new-tokens", "3", "--seed", "7"]


def _cmd(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from vrp.cli import app; app()", "run", "--answer-only", "--model", model, "--out", str(out),
            *ARGS, *extra]  # fmt: skip


def _env(fault: str | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("VRP_TEST_FAULT", None)
    if fault:
        env["VRP_TEST_FAULT"] = fault
    return env


def _run(model: str, out: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(model, out, *extra), env=_env(fault), capture_output=True, text=True, timeout=300)


def _snapshot(run_dir: Path) -> dict:
    """Everything a run computed: rows, failures, every stacked shard array and every item's
    attention map, keyed by item (shards are merged by size, so their boundaries may differ)."""
    arrays = {}
    for ids, tensors in storage.iter_shards(run_dir):
        for k, v in tensors.items():
            if k.startswith("attention."):
                arrays[(ids[int(k.split(".")[1])], "attention")] = v
            else:
                arrays.update({(i, k): row for i, row in zip(ids, v, strict=True)})
    rows = pq.read_table(run_dir / "items.parquet")
    # images live in each run's own data/ folder: compare their names, not their folders
    names = [Path(p).relative_to(run_dir).as_posix() for p in rows.column("image").to_pylist()]
    return {
        "rows": rows.drop(["image"]).append_column("image_in_run", pa.array(names)),
        "failures": (run_dir / "failures.jsonl").read_text(),
        "arrays": arrays,
    }


def _assert_same(a: dict, b: dict) -> None:
    assert_tables_equal(a["rows"], b["rows"])
    assert a["failures"] == b["failures"]
    assert a["arrays"].keys() == b["arrays"].keys()
    for k in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k], err_msg=str(k))


@pytest.fixture(scope="module")
def reference(random_toy_dirs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "run"
    res = _run(random_toy_dirs["llava"], out)
    assert res.returncode == 0, res.stderr
    snap = _snapshot(out)
    n_batches = json.loads((out / "manifest.json").read_text())["counts"]["batches"]
    assert n_batches >= 5 and len(snap["rows"]) >= 9
    return {"snap": snap, "batches": n_batches, "dir": out}


def test_sigkill_at_every_commit_stage_then_resume_is_identical(random_toy_dirs, reference, tmp_path):
    model, out = random_toy_dirs["llava"], tmp_path / "run"
    committed = []
    # Killed before a batch's arrays, between its arrays and its rows (the commit marker),
    # and right after a commit; each time the next run resumes from what is on disk.
    for fault in ("after_arrays:2", "before_arrays:2", "after_rows:1"):
        res = _run(model, out, fault)
        assert res.returncode == -signal.SIGKILL, (fault, res.returncode, res.stderr[-2000:])
        committed.append(_batches_done(out))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "running"  # killed: never reached its end
    assert committed == sorted(committed) and committed[-1] < reference["batches"]
    assert committed[0] == 1  # the batch whose rows were never written is not counted
    assert len(storage.completed(out)) < committed[-1]  # each resume merged what was committed before it
    res = _run(model, out)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert len(list((out / "shards").iterdir())) == 2  # one merged shard
    _assert_same(_snapshot(out), reference["snap"])


def _batches_done(run_dir: Path) -> int:
    """The batches the committed shards cover (one shard may hold several, once merged)."""
    spans = batches(json.loads((run_dir / "manifest.json").read_text())["counts"]["items"], 2)
    return len(spans) - len(storage.pending(storage.completed(run_dir), spans))


def test_sigkill_from_outside_and_leftovers_are_cleaned(random_toy_dirs, reference, tmp_path):
    model, out = random_toy_dirs["llava"], tmp_path / "run"
    proc = subprocess.Popen(_cmd(model, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "shards").glob("*.parquet"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    # what a crash in the middle of writing would leave behind
    (out / "shards" / ".items-00000099-00000100.parquet.tmp").write_bytes(b"PAR1 half a file")
    (out / "shards" / "items-00000098-00000099.safetensors").write_bytes(b"arrays without rows")
    res = _run(model, out)
    assert res.returncode == 0, res.stderr
    leftovers = [p.name for p in (out / "shards").iterdir() if p.name.startswith(".") or "0000009" in p.name]
    assert leftovers == [] and len(list((out / "shards").iterdir())) == 2
    _assert_same(_snapshot(out), reference["snap"])


def test_sigterm_flushes_completed_work_and_resumes(random_toy_dirs, reference, tmp_path):
    model, out = random_toy_dirs["llava"], tmp_path / "run"
    proc = subprocess.Popen(_cmd(model, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "shards").glob("*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    manifest = json.loads((out / "manifest.json").read_text())
    if proc.returncode == 0:  # the run finished before the signal landed: nothing to test
        pytest.skip("run completed before SIGTERM arrived")
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    assert manifest["status"] == "interrupted"
    done = manifest["counts"]["batches_committed"]
    assert 1 <= done < reference["batches"]
    assert len(pq.read_table(out / "items.parquet")) == manifest["counts"]["answered"] > 0  # flushed
    res = _run(model, out)
    assert res.returncode == 0, res.stderr
    _assert_same(_snapshot(out), reference["snap"])


def test_a_changed_setup_is_refused_unless_forced(random_toy_dirs, reference, tmp_path):
    from typer.testing import CliRunner

    from vrp.cli import app

    def run(model: str, *extra: str):
        return CliRunner().invoke(app, ["run", "--answer-only", "--model", model, "--out", str(out), *ARGS, *extra])

    out = tmp_path / "run"
    shutil.copytree(reference["dir"], out)  # a moved run directory is still the same run
    res = run(random_toy_dirs["llava"], "--samples", "4")
    assert res.exit_code == 2
    assert "different setup" in res.output and "samples: 3 -> 4" in res.output
    res = run(random_toy_dirs["paligemma"])
    assert res.exit_code == 2 and "model's config or weight files differ" in res.output
    # operational options may change: the same run, resumed (here: nothing left to do)
    res = run(random_toy_dirs["llava"], "--workers", "3")
    assert res.exit_code == 0, res.output
    # a run made before an option existed resumes: the option's default is what that run did
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["identity"]["config"].pop("nli_model")
    (out / "manifest.json").write_text(json.dumps(manifest))
    res = run(random_toy_dirs["llava"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    res = run(random_toy_dirs["llava"], "--samples", "4", "--force", "--limit", "2")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["config"]["samples"] == 4
    assert len(pq.read_table(out / "items.parquet")) == 2


def test_a_different_checkpoint_of_the_same_architecture_is_refused(random_toy_dirs, tmp_path):
    """Same config.json and file sizes, different weights: the content hash tells them apart."""
    from typer.testing import CliRunner

    from vrp.cli import app
    from vrp.toys.build import build_toy

    model = tmp_path / "model"
    shutil.copytree(random_toy_dirs["llava"], model)
    out = tmp_path / "run"
    cli_run(out, *ARGS, "--limit", "2", model=model)
    args = ["run", "--answer-only", "--model", str(model), "--out", str(out), *ARGS, "--limit", "2"]
    other, _ = build_toy("llava", seed=7)
    other.save_pretrained(model)  # a different checkpoint, byte sizes unchanged
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "the model's weights differ" in res.output, res.output
