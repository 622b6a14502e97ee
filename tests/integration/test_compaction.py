"""Shards merged by size: the merged run reads exactly as the per-batch one, a kill at every
step of a merge resumes to the identical result, and a default-size run ends with two files.

The reference is a run of the shipped toy LLaVA kept at one shard per batch (``--shard-mb 0``);
the same run with the default options is merged when it finishes. Kills are real: ``vrp run``
in a subprocess with ``VRP_TEST_FAULT`` (:func:`vrp.runs.storage._fault`) SIGKILLs itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import assert_tables_equal, cli_run
from vrp.config import RunConfig
from vrp.report.data import item_arrays, load_run, shard_meta
from vrp.runs import storage
from vrp.runs.pipeline import batches
from vrp.runs.rundir import items_schema

ARGS = ["--data", "shapesworld:3", "--batch-size", "2", "--samples", "2", "--max-new-tokens", "3", "--seed", "2"]
DEFAULT_BYTES, DEFAULT_ITEMS = int(RunConfig().shard_mb * 1e6), RunConfig().shard_items


def _run_cmd(out: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("VRP_TEST_FAULT", None)
    if fault:
        env["VRP_TEST_FAULT"] = fault
    cmd = [sys.executable, "-c", "from vrp.cli import app; app()", "run", "--answer-only", "--out", str(out),
           *ARGS, *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _content(run_dir: Path, with_items: bool = True) -> dict:
    """What any reader of the run sees: rows, failures, every stacked array, every item's own
    arrays as the report reads them (attention map, view box, residual) and the shard meta."""
    keys = sorted({k for _, arrays in storage.iter_shards(run_dir) for k in arrays if not k.startswith("attention.")})
    stacked = {k: storage.load_stacked(run_dir, k) for k in keys}
    rows = storage.read_rows(run_dir)
    run = load_run(run_dir)
    out = {
        "rows": rows.drop(["image"]),
        "failures": storage.read_failures(run_dir),
        "stacked": stacked,
        "meta": shard_meta(run),  # the first shard's meta, as the report and the probes read it
        "per_item": item_arrays(run, rows.column("id").to_pylist(), ("attention", "view_box", "residual")),
        "files": None,
    }
    if with_items:  # items.parquet and failures.jsonl: rewritten by the run that finishes
        out["files"] = (
            pq.read_table(run_dir / "items.parquet").drop(["image"]),
            (run_dir / "failures.jsonl").read_text(),
        )
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert_tables_equal(a["rows"], b["rows"])
    assert a["failures"] == b["failures"] and a["meta"] == b["meta"]
    assert a["stacked"].keys() == b["stacked"].keys()
    for k, (ids, arr) in a["stacked"].items():
        assert ids == b["stacked"][k][0], k
        np.testing.assert_array_equal(arr, b["stacked"][k][1], err_msg=k)
    assert a["per_item"].keys() == b["per_item"].keys()
    for i, got in a["per_item"].items():
        assert got.keys() == b["per_item"][i].keys() == {"attention", "view_box", "residual"}, i
        for k in got:
            np.testing.assert_array_equal(got[k], b["per_item"][i][k], err_msg=f"{i} {k}")
    if a["files"] is not None and b["files"] is not None:
        assert_tables_equal(a["files"][0], b["files"][0])
        assert a["files"][1] == b["files"][1]


def _files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "shards").iterdir())


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The reference: one shard per batch (13 items: 7 batches of at most 2)."""
    out = tmp_path_factory.mktemp("plain") / "run"
    cli_run(out, *ARGS, "--shard-mb", "0")
    assert len(_files(out)) == 2 * json.loads((out / "manifest.json").read_text())["counts"]["batches"] == 14
    return out


@pytest.fixture(scope="module")
def reference(plain) -> dict:
    return _content(plain)


def _copy(plain: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(plain, out)
    return out


def test_a_finished_run_is_merged_and_reads_the_same(plain, reference, tmp_path):
    out = tmp_path / "run"
    cli_run(out, *ARGS)
    manifest = json.loads((out / "manifest.json").read_text())
    n = manifest["counts"]["items"]
    assert _files(out) == [f"items-00000000-{n:08d}.parquet", f"items-00000000-{n:08d}.safetensors"]
    assert manifest["disk"]["shard_files"] == 2 and manifest["counts"]["batches_committed"] == 7
    modes = {p.stat().st_mode for p in (out / "shards").iterdir()}
    assert len(modes) == 1  # the merged arrays are as readable as the rows (save_file makes 0600)
    got = _content(out)
    assert got["meta"] == {"attention_layers": [0, 1, 2, 3], "n_layers": 4, "stored_layers": [0, 1, 2, 3]}
    _assert_same(got, reference)
    # the merged shard numbers its per-item maps by its own rows: 0 .. n - 1
    (_, arrays), = storage.iter_shards(out)  # fmt: skip
    assert sorted(int(k.split(".")[1]) for k in arrays if k.startswith("attention.")) == list(range(n))
    # the analysis reads it as before (probing reads the first shard's meta)
    from vrp.analysis.probing import load_probe_data

    a, b = load_probe_data(out), load_probe_data(plain)
    assert a["residual_layers"] == b["residual_layers"] and a["ids"] == b["ids"]
    np.testing.assert_array_equal(a["X"], b["X"])


def test_merges_respect_the_item_and_byte_targets_and_can_grow(plain, reference, tmp_path):
    out = _copy(plain, tmp_path)
    assert storage.compact(out, DEFAULT_BYTES, max_items=4) == 3  # [12, 13) stays as it is
    assert list(storage.completed(out)) == [(0, 4), (4, 8), (8, 12), (12, 13)]
    _assert_same(_content(out), reference)
    assert storage.compact(out, DEFAULT_BYTES, max_items=4) == 0  # nothing left to merge
    # by bytes: two merged shards of 4 items fit in a target, a third does not
    sizes = {
        span: p.stat().st_size + p.with_suffix(".safetensors").stat().st_size
        for span, p in storage.completed(out).items()
    }
    target = sizes[(0, 4)] + sizes[(4, 8)] + 10
    assert storage.compact(out, target, DEFAULT_ITEMS) == 2
    assert list(storage.completed(out)) == [(0, 8), (8, 13)]
    _assert_same(_content(out), reference)
    assert storage.compact(out, DEFAULT_BYTES, DEFAULT_ITEMS) == 1
    assert list(storage.completed(out)) == [(0, 13)] and len(_files(out)) == 2
    _assert_same(_content(out), reference)


def test_merges_never_span_a_missing_batch_and_resume_fills_it(plain, reference, tmp_path):
    out = _copy(plain, tmp_path)
    for p in (out / "shards").glob("items-00000006-00000008.*"):  # a batch not computed yet
        p.unlink()
    (out / "items.parquet").unlink()
    storage.compact(out, DEFAULT_BYTES, DEFAULT_ITEMS)
    spans = batches(13, 2)
    assert list(storage.completed(out)) == [(0, 6), (8, 13)]
    assert storage.pending(storage.completed(out), spans) == [(6, 8)]
    cli_run(out, *ARGS)  # resumes: computes the one batch, then merges everything
    assert list(storage.completed(out)) == [(0, 13)] and len(_files(out)) == 2
    _assert_same(_content(out), reference)


# (stage, the files under shards/ the kill leaves: 14 of the 7 batches, the merged pair, ...)
STAGES = [
    ("compact_before_arrays:1", 14),  # nothing written yet
    ("compact_after_arrays:1", 15),  # merged arrays without rows: debris
    ("compact_after_rows:1", 16),  # merged shard committed, every source still there
    ("compact_delete:1", 15),  # first source's rows deleted, its arrays left
    ("compact_delete:4", 9),  # three sources gone, the fourth halfway
    ("compact_after_delete:1", 2),  # everything done but the process's own end
]


@pytest.mark.parametrize(("fault", "n_files"), STAGES, ids=[s for s, _ in STAGES])
def test_a_kill_at_every_step_of_a_merge_resumes_to_the_identical_run(plain, reference, tmp_path, fault, n_files):
    out = _copy(plain, tmp_path)
    res = _run_cmd(out, fault)  # a resume of the finished run: it merges first, and is killed there
    assert res.returncode == -signal.SIGKILL, (fault, res.returncode, res.stderr[-2000:])
    assert len(_files(out)) == n_files, _files(out)
    # whatever the kill left, a reader sees the same run (a merged shard supersedes its sources)
    _assert_same(_content(out, with_items=False), reference)
    cli_run(out, *ARGS)
    assert len(_files(out)) == 2, _files(out)  # debris and superseded shards are gone
    _assert_same(_content(out), reference)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_killed_mid_run_then_killed_merging_on_resume(plain, reference, tmp_path):
    out = tmp_path / "run"
    res = _run_cmd(out, "after_rows:3")  # three batches committed
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert list(storage.completed(out)) == [(0, 2), (2, 4), (4, 6)]
    res = _run_cmd(out, "compact_after_rows:1")  # the resume merges them first and dies committed
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert list(storage.completed(out)) == [(0, 6)] and len(_files(out)) == 8
    res = _run_cmd(out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(_files(out)) == 2
    _assert_same(_content(out), reference)


# ---- synthetic shards: scale, empty batches, shards that must not merge --------------------


def _rows(ids: list[str]) -> pa.Table:
    base = {"task": "t", "question": "q", "answer": "a", "gold": ["a"], "score": 1.0, "correct": True,
            "image": "x.png", "n_answer_tokens": 1, "meta": "{}", "samples": []}  # fmt: skip
    return pa.Table.from_pylist([{"id": i, **base} for i in ids], schema=items_schema())


def _write_batches(run: Path, n_items: int, batch: int, per_item_floats: int, meta: dict | None = None) -> None:
    rng = np.random.default_rng(0)
    for s, e in batches(n_items, batch):
        ids = [f"it-{i:05d}" for i in range(s, e)]
        tensors = {
            "residual": rng.normal(size=(e - s, 5, per_item_floats // 5)).astype(np.float16),
            "curve.margin": rng.normal(size=(e - s, 5)).astype(np.float32),
        }
        tensors.update({f"attention.{r}": rng.random((4, 4, 4), dtype=np.float32) for r in range(e - s)})
        storage.write_shard(run, s, e, _rows(ids), tensors, [], meta or {"n_layers": 4, "stored_layers": [0, 1, 2, 3]})


def test_a_default_size_run_of_1314_items_ends_with_two_files(tmp_path):
    run = tmp_path / "run"
    _write_batches(run, 1314, 16, per_item_floats=640)  # ~1.3 kB of residual + 256 B of maps per item
    assert storage.shard_files(run) == 166
    before = storage.load_stacked(run, "residual")
    assert storage.compact(run, DEFAULT_BYTES, DEFAULT_ITEMS) == 1
    assert _files(run) == ["items-00000000-00001314.parquet", "items-00000000-00001314.safetensors"]
    after = storage.load_stacked(run, "residual")
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    # at a size target, every merged shard stays within it (a few MB here stand for 64 MB)
    run2 = tmp_path / "run2"
    _write_batches(run2, 1314, 16, per_item_floats=4000)  # ~8 kB per item: ~10.5 MB in all
    target = 2_000_000
    storage.compact(run2, target, DEFAULT_ITEMS)
    sizes = [p.stat().st_size + p.with_suffix(".safetensors").stat().st_size for p in storage.completed(run2).values()]
    assert 5 <= len(sizes) <= 7 and max(sizes) <= target
    assert sum(sizes) == storage.shard_bytes(run2)


def test_empty_batches_merge_and_different_layouts_do_not(tmp_path):
    run = tmp_path / "run"
    _write_batches(run, 4, 2, per_item_floats=10)
    failed = [{"id": "it-00004", "stage": "image", "source": "x", "error": "e"}, {"id": "it-00005", "stage": "image", "source": "y", "error": "e"}]  # fmt: skip
    storage.write_shard(run, 4, 6, _rows([]), {}, failed, {"n_layers": 4, "stored_layers": [0, 1, 2, 3]})
    storage.write_shard(  # a shard of another layout (no residuals): merges with no other
        run, 6, 8, _rows(["it-00006", "it-00007"]), {"curve.margin": np.zeros((2, 5), np.float32)}, [],
        {"n_layers": 4, "stored_layers": [0, 1, 2, 3]},
    )  # fmt: skip
    before = [storage.load_stacked(run, "curve.margin"), storage.read_failures(run)]
    assert storage.compact(run, DEFAULT_BYTES, DEFAULT_ITEMS) == 1
    assert list(storage.completed(run)) == [(0, 6), (6, 8)]
    assert storage.read_failures(run) == before[1] == failed
    ids, margin = storage.load_stacked(run, "curve.margin")
    assert ids == before[0][0] and np.array_equal(margin, before[0][1])


def test_a_reader_prefers_the_merged_shard_and_partial_overlaps_are_corruption(tmp_path):
    run = tmp_path / "run"
    _write_batches(run, 6, 2, per_item_floats=10)
    keep = {p.name: p.read_bytes() for p in (run / "shards").iterdir()}
    storage.compact(run, DEFAULT_BYTES, DEFAULT_ITEMS)
    for name, data in keep.items():  # as if the kill came before the sources were deleted
        (run / "shards" / name).write_bytes(data)
    assert list(storage.completed(run)) == [(0, 6)]
    assert storage.pending(storage.completed(run), batches(6, 2)) == []
    assert storage.recover(run) == 6 and len(_files(run)) == 2
    storage.write_shard(run, 4, 8, _rows(["a", "b", "c", "d"]), {}, [])
    with pytest.raises(RuntimeError, match="corrupt"):
        storage.completed(run)
    with pytest.raises(RuntimeError, match="corrupt"):
        storage.pending([(0, 3)], batches(6, 2))
