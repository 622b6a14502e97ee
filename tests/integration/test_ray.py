"""``--engine ray`` on a local Ray cluster of 2 CPU workers equals the single-process run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vrp.cli import app
from vrp.runs import storage

pytest.importorskip("ray")
ARGS = ["--data", "shapesworld:4", "--batch-size", "3", "--samples", "3", "--max-new-tokens", "3", "--seed", "3"]


def _invoke(out, *extra):
    res = CliRunner().invoke(app, ["run", "--model", "toy-llava", "--out", str(out), *ARGS, *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "manifest.json").read_text())


def test_ray_two_workers_equals_local_and_resumes(tmp_path):
    local, dist = tmp_path / "local", tmp_path / "ray"
    m_local = _invoke(local)
    m_ray = _invoke(dist, "--engine", "ray", "--workers", "2")
    assert m_ray["status"] == "complete" and m_ray["counts"]["batches_committed"] == m_local["counts"]["batches"] >= 4
    _assert_close(local, dist)
    # lose two batches (as a crash would) and resume on Ray: the same result again
    parquets = sorted((dist / "shards").glob("*.parquet"))
    for p in parquets[1:3]:
        p.unlink()
    (dist / "items.parquet").unlink()
    m_again = _invoke(dist, "--engine", "ray", "--workers", "2")
    assert m_again["counts"]["batches_committed"] == m_local["counts"]["batches"]
    _assert_close(local, dist)


def _assert_close(local, dist) -> None:
    a, b = pq.read_table(local / "items.parquet"), pq.read_table(dist / "items.parquet")
    assert a.num_rows == b.num_rows > 0
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if name == "image":
            continue  # each run generated its data into its own folder
        if pa.types.is_floating(x.type):
            # Ray workers run torch with 1 thread, this process with more: float sums may differ in
            # the last bits, never in the answers, the labels or the sampled answers
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            assert x.to_pylist() == y.to_pylist(), name
    sa, sb = dict(_arrays(local)), dict(_arrays(dist))
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_allclose(sa[k].astype(np.float64), sb[k].astype(np.float64), rtol=1e-3, atol=1e-4)


def _arrays(run_dir):
    for ids, tensors in storage.iter_shards(run_dir):
        for k, v in tensors.items():
            yield (tuple(ids), k), v
