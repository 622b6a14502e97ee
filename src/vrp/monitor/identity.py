"""Which model a monitor belongs to: the run's identity hash plus a sampled content hash.

``vrp run`` identifies a model by :func:`vrp.runs.rundir.model_identity`: a sha256 of its
config.json and its weight files' names and sizes. That is cheap and stable, but two
checkpoints of the same architecture (a fine-tune, or random weights) share it. A monitor
therefore also records, when the model folder is readable at export time, a hash of the
weight files' *bytes* at fixed places: the first MiB of each file (the safetensors header
with every tensor's name, shape and offsets) and 64 slices of 16 KiB spread evenly over the
rest (files up to 8 MiB are hashed whole). Reading ~2 MiB per file costs milliseconds even for
a 7B model, and a changed checkpoint is caught unless it differs only between the slices.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HEAD = 1 << 20
SLICES = 64
SLICE = 16 << 10
WHOLE = 8 << 20


def model_sha256(path: str | Path) -> str:
    """The run's identity hash of a model folder (config.json + weight file names and sizes)."""
    from vrp.runs.rundir import model_identity

    return model_identity(path)["sha256"]


def _weight_files(path: Path) -> list[Path]:
    # the same selection as vrp.runs.rundir.model_identity
    return sorted(q for q in path.iterdir() if q.suffix in (".safetensors", ".bin") or q.name.endswith(".index.json"))


def content_sha256(path: str | Path) -> str:
    """sha256 of the weight files' bytes at fixed places (see the module docstring)."""
    h = hashlib.sha256()
    for w in _weight_files(Path(path)):
        size = w.stat().st_size
        h.update(f"{w.name}\0{size}\0".encode())
        with w.open("rb") as f:
            if size <= WHOLE:
                h.update(f.read())
                continue
            h.update(f.read(HEAD))
            span = size - HEAD - SLICE
            for i in range(SLICES):
                f.seek(HEAD + span * i // (SLICES - 1))
                h.update(f.read(SLICE))
    return h.hexdigest()
