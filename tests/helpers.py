"""Helpers shared by test modules."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def bomb_png(path: Path, width: int, height: int | None = None) -> Path:
    """Write a valid PNG header declaring width x height pixels with almost no data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height or width, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


def assert_tables_equal(a, b, skip: tuple[str, ...] = (), rtol: float = 0.0, atol: float = 0.0) -> None:
    """Two pyarrow tables hold the same rows: exact (or within rtol/atol) on float columns with
    NaN == NaN (pyarrow's ``equals`` says NaN != NaN), exact elsewhere; ``skip`` columns ignored."""
    import numpy as np
    import pyarrow as pa

    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        if name in skip:
            continue
        x, y = a.column(name), b.column(name)
        if pa.types.is_floating(x.type):
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=rtol, atol=atol, err_msg=name)
        else:
            assert x.to_pylist() == y.to_pylist(), name


def cli_run(out: Path, *args: str, model: str | Path = "toy-llava"):
    """``vrp run --answer-only --model MODEL --out OUT ARGS...`` in-process (typer's CliRunner);
    asserts it succeeded (the output is in the message otherwise) and returns the result."""
    from typer.testing import CliRunner

    from vrp.cli import app

    res = CliRunner().invoke(app, ["run", "--answer-only", "--model", str(model), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return res
