"""Tiny random-weight models of every supported family, with their real processors.

Each entry builds a genuine HF model class (``from_config``, 4 decoder blocks, width 128)
with the family's real processor around a word-level tokenizer over ShapesWorld's words, and
the geometry the family's tests need (non-square images, several tiles). They are what the
tests and benchmarks run, offline; saved with ``save_pretrained`` they load back with
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` like hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinyFamily:
    """How to build one family's tiny model, and what its tests need.

    Attributes:
        build: seed -> (model, processor), the model in eval mode on CPU.
        make_vision_local: zero the vision tower's mixing between patches, so that a patch of
            the image changes only the image tokens whose pixels hold it.
        sizes: image sizes (width, height) the tests use: non-square, and for tiled families
            one that gives several tiles.
    """

    build: Callable[[int], tuple[Any, Any]]
    make_vision_local: Callable[[Any], None]
    sizes: tuple[tuple[int, int], ...]


# model_type -> "module:attribute prefix" of its builder (build_<prefix>) in this package
_BUILDERS = {
    "qwen2_5_vl": "qwen",
    "qwen3_vl": "qwen",
    "qwen3_5": "qwen",
    "internvl": "internvl",
    "gemma3": "gemma3",
    "mistral3": "mistral3",
    "llava_next": "llava_next",
    "llava_onevision": "llava_next",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
}


def family(model_type: str) -> TinyFamily:
    """The tiny-model recipe of ``model_type``."""
    if model_type not in _BUILDERS:
        raise ValueError(f"no tiny model of {model_type!r}; tiny models exist for {', '.join(sorted(_BUILDERS))}")
    module = import_module(f"vrp.toys.tiny.{_BUILDERS[model_type]}")
    return module.FAMILIES[model_type]


def model_types() -> list[str]:
    return sorted(_BUILDERS)


def build_tiny(model_type: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of a fresh tiny ``model_type`` model, random weights seeded by ``seed``."""
    model, processor = family(model_type).build(seed)
    return model.eval(), processor


def save_tiny(model_type: str, out: str | Path, seed: int = 0) -> Path:
    """Build a tiny ``model_type`` model and save it (model and processor) to ``out``."""
    out = Path(out)
    model, processor = build_tiny(model_type, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
