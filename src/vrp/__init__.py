"""vrp, the VLM Reliability Probe: where reliability lives inside a vision-language model.

The public API (names are imported on first use, so ``import vrp`` stays light)::

    model = vrp.load("toy-llava")                    # a shipped toy or a local model folder
    t = vrp.trace(model, "img.png", "Is there a dog?")  # -> vrp.Trace
    t.answer, t.attention(), t.residual(-1), t.logit_lens(-1), t.signals()

``vrp.trace`` options are the fields of :class:`TraceConfig`; ``vrp.run`` runs the whole
``vrp run`` pipeline from a :class:`RunConfig`; ``vrp.hooks`` reads or replaces named sites
(``embed``, ``blocks.{l}.resid_post``, ``.attn_out``, ``.mlp_out``, ``.attn_z``);
:mod:`vrp.interventions` holds the ablation and patching context managers; :class:`Monitor`
attaches a trained probe to a live model. See docs/python-api.md.
"""

from importlib import import_module
from typing import Any

from vrp._version import __version__

# public name -> the module that defines it (one place each)
_EXPORTS = {
    "load": ("vrp.models.loading", "load_adapter"),
    "ModelAdapter": ("vrp.models.base", "ModelAdapter"),
    "trace": ("vrp.tracing.trace", "trace"),
    "Trace": ("vrp.tracing.trace", "Trace"),
    "TraceConfig": ("vrp.config", "TraceConfig"),
    "RunConfig": ("vrp.config", "RunConfig"),
    "ConfigError": ("vrp.config", "ConfigError"),
    "Item": ("vrp.data.items", "Item"),
    "load_items": ("vrp.data.sources", "load_items"),
    "run": ("vrp.runs.pipeline", "run"),
    "hooks": ("vrp.models.sites", "hooks"),
    "Monitor": ("vrp.monitor.live", "Monitor"),
    "Answer": ("vrp.monitor.live", "Answer"),
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'vrp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
