"""vrp, the VLM Reliability Probe: where reliability lives inside a vision-language model.

The public API (names are imported on first use, so ``import vrp`` stays light)::

    model = vrp.load("toy-llava")                    # a shipped toy or a local model folder
    t = vrp.trace(model, "img.png", "Is there a dog?")  # -> vrp.Trace
    t.answer, t.attention(), t.residual(-1), t.logit_lens(-1), t.signals()

``vrp.trace`` options are the fields of :class:`TraceConfig`; ``vrp.run`` answers and measures
every item of a :class:`RunConfig` into its run directory (``vrp run --answer-only``; probes,
analysis and report are their own functions); ``vrp.hooks`` reads or replaces named sites
(``embed``, ``blocks.{l}.resid_post``, ``.attn_out``, ``.mlp_out``, ``.attn_z``);
:mod:`vrp.interventions` holds the ablation and patching context managers; :class:`Monitor`
attaches a trained probe to a live model; ``vrp.run_study`` runs a :class:`StudyConfig` (every
model on every dataset, then the study tables: ``vrp study``). See docs/python-api.md.
"""

from vrp._lazy import lazy_dir, lazy_getattr
from vrp._version import __version__

# public name -> the module that defines it (one place each)
_EXPORTS = {
    "load": "vrp.models.loading:load_adapter",
    "ModelAdapter": "vrp.models.base",
    "trace": "vrp.tracing.tracer",
    "Trace": "vrp.tracing.tracer",
    "TraceConfig": "vrp.config",
    "RunConfig": "vrp.config",
    "ConfigError": "vrp.config",
    "Item": "vrp.data.items",
    "load_items": "vrp.data.sources",
    "run": "vrp.runs.pipeline",
    "hooks": "vrp.models.sites",
    "Monitor": "vrp.monitor.live",
    "Answer": "vrp.monitor.live",
    "StudyConfig": "vrp.study.config",
    "run_study": "vrp.study.runner",
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
