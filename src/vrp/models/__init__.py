"""Model adapters, one per family, and their explicit registry."""

from importlib import import_module

from vrp.models.base import (
    ModelAdapter,
    NotAModelError,
    UnsupportedModelError,
    adapter_for,
    read_model_type,
    supported_model_types,
)
from vrp.models.loading import load_adapter, resolve_model_path

# One module per family; importing it registers its adapter (explicitly, here, in this order).
FAMILY_MODULES = (
    "llava",
    "paligemma",
    "qwen2vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_5",
    "gemma3",
    "mistral3",
    "llava_next",
    "llava_onevision",
    "idefics3",
    "smolvlm",
    "internvl",
)
for _module in FAMILY_MODULES:
    import_module(f"vrp.models.{_module}")

__all__ = [
    "ModelAdapter",
    "NotAModelError",
    "UnsupportedModelError",
    "adapter_for",
    "load_adapter",
    "read_model_type",
    "resolve_model_path",
    "supported_model_types",
]
