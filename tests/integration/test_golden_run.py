"""`vrp run` still computes what it computed before the package was refactored around the
public API (issue 20): a ShapesWorld run of toy-llava against the items.parquet the earlier
code wrote (commit 42e1383, `vrp run --answer-only --data shapesworld:6 --seed 4 --samples 3`).

On the machine that recorded it every column was equal bit for bit (and so was the default
run's, 1,314 items); floats are compared to 1e-6 relative here so that another CPU's kernels
do not fail it. Regenerate only when a change of numbers is intended, and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import cli_run
from vrp.signals.catalog import NAMES

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "items-shapesworld6-seed4-k3.parquet"


def test_the_run_matches_the_recorded_items_parquet(tmp_path):
    cli_run(tmp_path / "run", "--data", "shapesworld:6", "--seed", "4", "--samples", "3")
    got, want = pq.read_table(tmp_path / "run" / "items.parquet"), pq.read_table(GOLDEN)
    # every recorded column, with its type; a column added since is a new signal of the catalog
    assert [got.schema.field(n) for n in want.column_names] == list(want.schema) and got.num_rows == want.num_rows == 25
    assert set(got.column_names) - set(want.column_names) <= set(NAMES)
    for name in want.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        if name == "image":  # absolute paths: compare inside the run directory
            a, b = [Path(v).parts[-3:] for v in a], [Path(v).parts[-3:] for v in b]
        if want.schema.field(name).type in ("double", "float"):
            np.testing.assert_allclose(np.array(a, float), np.array(b, float), rtol=1e-6, atol=1e-9, err_msg=name)
        else:
            assert a == b, name
    assert not np.isnan(np.array(got.column("margin_last").to_pylist(), float)).any()
    assert pytest.approx(np.mean(got.column("correct").to_pylist())) == np.mean(want.column("correct").to_pylist())
