"""Model adapters, one per family, and their explicit registry."""

from vrp.models import llava, paligemma, qwen2_5_vl, qwen2vl, qwen3_vl  # noqa: F401  (registers the adapters)
from vrp.models.base import (
    ModelAdapter,
    NotAModelError,
    UnsupportedModelError,
    adapter_for,
    read_model_type,
    supported_model_types,
)
from vrp.models.loading import load_adapter, resolve_model_path

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
