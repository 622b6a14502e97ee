"""File writing shared by every layer that writes to disk."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: a temporary sibling, then a rename.

    Args:
        path: destination.
        data: the bytes.
        fsync: flush to disk before the rename (for records that must survive a crash;
            regenerable files such as rendered images skip it).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
