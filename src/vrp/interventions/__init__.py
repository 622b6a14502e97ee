"""Causal interventions: unit, MLP and head ablation, patch masking, activation patching.

The context managers in :mod:`vrp.interventions.edits` work on any loaded adapter from Python;
:func:`intervene` runs a whole experiment on a run directory (``vrp intervene``). Names are
imported on first use, so reading :mod:`vrp.interventions.schema` does not load torch.
"""

from vrp._lazy import lazy_dir, lazy_getattr

_EXPORTS = {
    "intervene": "vrp.interventions.api",
    "InterveneConfig": "vrp.interventions.config",
    "ablate_heads": "vrp.interventions.edits",
    "ablate_units": "vrp.interventions.edits",
    "bypass": "vrp.interventions.edits",
    "mask_image_tokens": "vrp.interventions.edits",
    "patch": "vrp.interventions.edits",
    "record": "vrp.interventions.edits",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
