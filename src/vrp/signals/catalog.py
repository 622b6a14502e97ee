"""Every per-item scalar signal ``vrp run`` writes to ``items.parquet``: its unit, its
direction and what it is. The README's signal table is generated from this list, so the
two cannot disagree (``python scripts/signal_table.py --readme``).

Direction says which way is *more reliable* in the method's hypothesis ("higher", "lower")
or "none" where the spec makes no claim; whether the hypothesis holds on a model is what
``vrp`` measures, not what it assumes.

``needs`` names what a signal reads besides the model and the question: "gold answer" (the
logit-lens truth margins compare the gold answer's logit with the best other token's) or
"gold region" (the annotated box of the queried object). A monitor at deployment has
neither, so those rows are diagnostics, not deployable predictors. For one-token answers
the sign of the last-layer margin *is* the greedy answer's correctness, so ``margin_last``
separates correct from wrong perfectly by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Signal:
    name: str
    family: str  # structural | mechanistic | behavioral
    unit: str
    direction: str  # higher | lower | none
    doc: str
    needs: str = ""  # "" | "gold answer" | "gold region": what it reads besides the model


_STRUCT_LAST = "at the last decoder layer; `_mean` = mean over layers"
SIGNALS: tuple[Signal, ...] = (
    # structural: the map p_l = attention over the image grid, mean over heads and answer tokens
    Signal("attn_entropy", "structural", "nats", "lower", f"spatial entropy H_s of p_l, {_STRUCT_LAST}"),
    Signal("attn_entropy_mean", "structural", "nats", "lower", "spatial entropy, mean over layers"),
    Signal("attn_entropy_norm", "structural", "fraction", "lower", "H_s / log(grid patches), last layer"),
    Signal("attn_entropy_norm_mean", "structural", "fraction", "lower", "normalized H_s, mean over layers"),
    Signal("attn_entropy_delta", "structural", "nats", "none", "H_s(L) - H_s(L-1) at the last layer"),
    Signal("attn_secondary", "structural", "count", "lower", "C_k - 1: extra 4-connected blobs of the top-rho set"),
    Signal("attn_secondary_mean", "structural", "count", "lower", "C_k - 1, mean over layers"),
    Signal("attn_dbscan_secondary", "structural", "count", "lower", "DBSCAN clusters - 1 (eps 1.5, min 3)"),
    Signal("attn_dbscan_secondary_mean", "structural", "count", "lower", "DBSCAN variant, mean over layers"),
    Signal("attn_peakiness", "structural", "probability", "higher", "max_s p_l(s) at the last layer"),
    Signal("attn_peakiness_mean", "structural", "probability", "higher", "peakiness, mean over layers"),
    Signal("attn_top_mass_area", "structural", "fraction", "lower", "patch fraction holding rho of the mass"),
    Signal("attn_top_mass_area_mean", "structural", "fraction", "lower", "top-mass area, mean over layers"),
    Signal("attn_image_mass", "structural", "probability", "none", "raw attention on image tokens, last layer"),
    Signal("attn_image_mass_mean", "structural", "probability", "none", "image attention mass, mean over layers"),
    Signal("attn_region_mass", "structural", "probability", "higher", "p_l mass inside the gold region(s)"),
    Signal("attn_region_mass_mean", "structural", "probability", "higher", "region mass, mean over layers"),
    Signal("attn_region_ratio", "structural", "ratio", "higher", "region mass / region area share (1 = chance)"),
    Signal("attn_region_ratio_mean", "structural", "ratio", "higher", "region ratio, mean over layers"),
    Signal("attn_pointing_hit", "structural", "0/1", "higher", "argmax patch inside the gold region"),
    Signal("attn_pointing_hit_mean", "structural", "fraction", "higher", "pointing hits, fraction of layers"),
    # mechanistic: logit lens at the decision position
    Signal("margin_last", "mechanistic", "logits", "higher", "truth margin M_l at the last layer"),
    Signal("margin_peak", "mechanistic", "logits", "higher", "largest truth margin over layers"),
    Signal("margin_peak_layer", "mechanistic", "residual index", "none", "layer of the peak margin (0 = embeddings)"),
    Signal(
        "margin_positive_from",
        "mechanistic",
        "residual index",
        "lower",
        "first layer from which M_l > 0 (L + 1: never)",
    ),
    Signal("mlp_share", "mechanistic", "fraction", "none", "MLP share of positive margin growth over layers"),
    # behavioral
    Signal("self_consistency", "behavioral", "fraction", "higher", "S_SC: largest canonical-answer cluster / K"),
    Signal("answer_entropy", "behavioral", "nats", "lower", "entropy of the K samples' canonical answers"),
    Signal("token_confidence", "behavioral", "probability", "higher", "p of the first emitted answer token"),
    Signal("geo_mean_prob", "behavioral", "probability", "higher", "geometric-mean p of answer tokens to newline"),
    Signal("first_step_entropy", "behavioral", "nats", "lower", "entropy of the first answer step's distribution"),
)

_NEEDS = {
    **dict.fromkeys(("margin_last", "margin_peak", "margin_peak_layer", "margin_positive_from", "mlp_share"), "gold answer"),
    **dict.fromkeys(
        ("attn_region_mass", "attn_region_mass_mean", "attn_region_ratio", "attn_region_ratio_mean", "attn_pointing_hit",
         "attn_pointing_hit_mean"),
        "gold region",
    ),
}  # fmt: skip
SIGNALS = tuple(replace(s, needs=_NEEDS.get(s.name, "")) for s in SIGNALS)
NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)
BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
NEEDS_NOTE = (
    "needs: what a signal reads besides the model (a deployed monitor has neither gold answers nor gold regions). "
    "With one-token answers and exact-match scoring, margin_last > 0 exactly when the greedy answer is correct, so "
    "margin_last and margin_positive_from have AUROC 1 by construction."
)
if set(_NEEDS) - set(NAMES):
    raise ValueError(f"_NEEDS names unknown signals: {sorted(set(_NEEDS) - set(NAMES))}")
