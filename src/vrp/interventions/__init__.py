"""Causal interventions: unit, MLP and head ablation, patch masking, activation patching.

The context managers in :mod:`vrp.interventions.hooks` work on any loaded adapter from Python;
:func:`intervene` runs a whole experiment on a run directory (``vrp intervene``). Names are
imported on first use, so reading :mod:`vrp.interventions.schema` does not load torch.
"""

from vrp._lazy import lazy_getattr

_EXPORTS = {
    "intervene": "vrp.interventions.api",
    "InterveneConfig": "vrp.interventions.config",
    "ablate_heads": "vrp.interventions.hooks",
    "ablate_units": "vrp.interventions.hooks",
    "bypass": "vrp.interventions.hooks",
    "mask_image_tokens": "vrp.interventions.hooks",
    "patch": "vrp.interventions.hooks",
    "record": "vrp.interventions.hooks",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
