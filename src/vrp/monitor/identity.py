"""Which model a monitor belongs to: the run's identity hash plus the sampled content hash.

``vrp run`` identifies a model by :func:`vrp.runs.rundir.model_identity`: ``sha256`` of its
config.json and weight files' names and sizes, and ``content_sha256`` of the weights' bytes
at fixed places (:func:`vrp.runs.rundir.content_sha256`), which tells apart two checkpoints
of one architecture (a fine-tune, random weights) that the first hash cannot.
"""

from __future__ import annotations

from pathlib import Path

from vrp.runs.rundir import content_sha256

__all__ = ["content_sha256", "model_sha256"]


def model_sha256(path: str | Path) -> str:
    """The run's identity hash of a model folder (config.json + weight file names and sizes)."""
    from vrp.runs.rundir import model_identity

    return model_identity(path)["sha256"]
