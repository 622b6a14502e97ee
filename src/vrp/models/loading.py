"""Resolve a model name or path and load it through its family's adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrp.models.base import ModelAdapter, adapter_for, read_model_type

TOY_MODELS = ("toy-llava", "toy-paligemma", "toy-qwen2vl")


def shipped_checkpoint_dir() -> Path:
    """The folder of the shipped toy checkpoints, ``vrp/toys/checkpoints``.

    Computed from this file's place in the package: ``vrp.toys`` sits above ``models`` and is
    not imported here.
    """
    return Path(__file__).resolve().parent.parent / "toys" / "checkpoints"


def resolve_model_path(name_or_path: str) -> Path:
    """A shipped toy name (``toy-llava``...) -> its packaged folder; else a local path."""
    if name_or_path in TOY_MODELS:
        p = shipped_checkpoint_dir() / name_or_path
        if not (p / "config.json").is_file():
            raise FileNotFoundError(
                f"the shipped checkpoint {name_or_path!r} is missing from {p}; "
                f"rebuild it with `vrp world train --arch {name_or_path[4:]} --out {p}`"
            )
        return p
    return Path(name_or_path)


def load_adapter(name_or_path: str, dtype: Any = None, device: str = "cpu") -> ModelAdapter:
    """Load a model (shipped toy name or local directory) through its adapter."""
    path = resolve_model_path(name_or_path)
    cls = adapter_for(read_model_type(path))
    return cls.load(path, dtype=dtype, device=device)
