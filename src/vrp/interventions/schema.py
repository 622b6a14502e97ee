"""What ``vrp intervene`` writes under ``RUN_DIR/interventions/`` (read by the report).

``effects.parquet`` -- one row per (experiment, condition, task): paired effects of an
intervention against the clean (unintervened) answers on the same items.

``patching.parquet`` -- one row per (experiment, site, layer): the fraction of the truth
margin that restoring that site from the clean run recovers in the corrupted run.

``summary.json`` -- ``{"experiments": {name: {"kind", "config", "n_items", "conditions": [...]}}}``; a condition is
``{"label", "layer", "control", "file"}``, plus ``"units"`` and ``"site"`` (what was ablated) for ``neurons``.

Each ``vrp intervene`` call replaces the rows of its own experiment name and keeps the others.
"""

from __future__ import annotations

import pyarrow as pa

EFFECTS = pa.schema(
    [
        ("experiment", pa.string()),  # name given with --name (default: the kind)
        ("kind", pa.string()),  # neurons | mass | mlp | heads | patches | patching
        ("condition", pa.string()),  # human label, e.g. "probe top-32 L3 zero", "random 32 L3 zero"
        ("layer", pa.int32()),  # decoder block (0-based); -1 where none applies
        ("control", pa.bool_()),  # True for the seeded random control of a condition
        ("task", pa.string()),  # a task family, or "all"
        ("n", pa.int64()),
        ("acc_clean", pa.float64()),
        ("acc_intervened", pa.float64()),
        ("delta_pp", pa.float64()),  # 100 * (acc_intervened - acc_clean)
        ("delta_ci_low", pa.float64()),  # paired bootstrap 95% CI, pp
        ("delta_ci_high", pa.float64()),
        ("margin_delta", pa.float64()),  # mean change of the last-layer truth margin (nats)
        ("margin_ci_low", pa.float64()),
        ("margin_ci_high", pa.float64()),
    ]
)

PATCHING = pa.schema(
    [
        ("experiment", pa.string()),
        ("corruption", pa.string()),  # e.g. "top-30% patches (pixel)"
        ("site", pa.string()),  # residual | attn | mlp
        ("layer", pa.int32()),
        ("n", pa.int64()),
        ("recovered", pa.float64()),  # mean over items of (m_patched - m_corrupt) / (m_clean - m_corrupt)
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
    ]
)

EFFECTS_FILE = "effects.parquet"
PATCHING_FILE = "patching.parquet"
SUMMARY_FILE = "summary.json"
