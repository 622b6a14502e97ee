"""Causal interventions: unit, MLP and head ablation, patch masking, activation patching.

The context managers in :mod:`vrp.interventions.hooks` work on any loaded adapter from Python;
:func:`intervene` runs a whole experiment on a run directory (``vrp intervene``).
"""

from vrp.interventions.api import intervene
from vrp.interventions.config import InterveneConfig
from vrp.interventions.hooks import ablate_heads, ablate_units, bypass, mask_image_tokens, patch, record

__all__ = ["InterveneConfig", "ablate_heads", "ablate_units", "bypass", "intervene", "mask_image_tokens", "patch",
           "record"]  # fmt: skip
