"""Resolve a model name or path and load it through its family's adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrp.config import DEVICE, DTYPES, TOY_MODELS
from vrp.models.base import ModelAdapter, adapter_for, read_model_type


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


def load_adapter(name_or_path: str | Path, *, dtype: Any = None, device: str = DEVICE) -> ModelAdapter:
    """Load a model through its family's adapter (what :func:`vrp.load` is).

    Args:
        name_or_path: a shipped toy name (toy-llava, toy-paligemma, toy-qwen2vl) or a local
            model folder written by ``save_pretrained`` (nothing is downloaded).
        dtype: the model's dtype: None (the checkpoint's), a torch dtype, or its name
            (float32, float16, bfloat16).
        device: torch device string.

    Raises:
        NotAModelError: the path is not a model folder.
        UnsupportedModelError: its ``model_type`` has no adapter (the message lists those that do).
    """
    import torch

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or a torch dtype), got {dtype!r}")
        dtype = getattr(torch, dtype)
    path = resolve_model_path(str(name_or_path))
    cls = adapter_for(read_model_type(path))
    return cls.load(path, dtype=dtype, device=device)
