"""``--engine ray`` on a local Ray cluster of 2 CPU workers equals the single-process run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import assert_tables_equal, cli_run
from vrp.runs import storage

pytest.importorskip("ray")
ARGS = ["--data", "shapesworld:4", "--batch-size", "3", "--samples", "3", "--max-new-tokens", "3", "--seed", "3"]


def _invoke(out, *extra):
    cli_run(out, *ARGS, *extra)
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def local_ray():
    """One local Ray cluster of 2 CPUs for the whole test (vrp uses it instead of starting its own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_two_workers_equals_local_and_resumes(tmp_path, local_ray):
    local, dist = tmp_path / "local", tmp_path / "ray"
    m_local = _invoke(local)
    # the actors commit one shard per batch (kept here: --shard-mb 0), the driver merges them
    m_ray = _invoke(dist, "--engine", "ray", "--workers", "2", "--shard-mb", "0")
    assert m_ray["status"] == "complete" and m_ray["counts"]["batches_committed"] == m_local["counts"]["batches"] >= 4
    assert m_ray["disk"]["shard_files"] == 2 * m_local["counts"]["batches"] and m_local["disk"]["shard_files"] == 2
    _assert_close(local, dist)
    # lose two batches (as a crash would) and resume on Ray: the same result again, merged
    parquets = sorted((dist / "shards").glob("*.parquet"))
    for p in parquets[1:3]:
        p.unlink()
    (dist / "items.parquet").unlink()
    m_again = _invoke(dist, "--engine", "ray", "--workers", "2")
    assert m_again["counts"]["batches_committed"] == m_local["counts"]["batches"]
    assert m_again["disk"]["shard_files"] == 2
    _assert_close(local, dist)


def _assert_close(local, dist) -> None:
    a, b = pq.read_table(local / "items.parquet"), pq.read_table(dist / "items.parquet")
    assert a.num_rows > 0
    # Ray workers run torch with 1 thread, this process with more: float sums may differ in the
    # last bits, never the answers, labels or sampled answers (images: each run's own data/ folder)
    assert_tables_equal(a, b, skip=("image",), rtol=1e-4, atol=1e-5)
    sa, sb = dict(_arrays(local)), dict(_arrays(dist))
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_allclose(sa[k].astype(np.float64), sb[k].astype(np.float64), rtol=1e-3, atol=1e-4)


def _arrays(run_dir):
    """Every shard array per item: (item id, key) -> the item's row or attention map."""
    for ids, tensors in storage.iter_shards(run_dir):
        for k, v in tensors.items():
            if k.startswith("attention."):
                yield (ids[int(k.split(".")[1])], "attention"), v
            else:
                yield from (((i, k), row) for i, row in zip(ids, v, strict=True))
