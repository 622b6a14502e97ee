"""The signal catalog: every per-item signal and per-layer curve, each with its compute
function and its metadata. ``vrp run``, :meth:`vrp.Trace.signals`, the predictor table, the
report and the docs' signal table all read this one list (``python scripts/signal_table.py``).

- A :class:`Curve` is a per-layer quantity of one item (``[L]`` over decoder blocks or
  ``[L + 1]`` over residual indices), stored by ``vrp run`` as the shard array
  ``curve.<name>``.
- A :class:`Signal` is one number per item, a column of ``items.parquet``.

Both compute from a :class:`Context` over one item's :class:`~vrp.signals.inputs.SignalInputs`,
which computes each shared intermediate (the attention maps ``p_l``, the top-rho masks, the
gold-region mask, the truth margin) once.

Direction says which way is *more reliable* in the method's hypothesis ("higher", "lower")
or "none" where the method makes no claim; whether the hypothesis holds on a model is what
vrp measures, not what it assumes.

``needs`` names what a signal reads besides the model and the question: "gold answer" (the
logit-lens truth margins compare the gold answer's logit with the best other token's) or
"gold region" (the annotated box of the queried object). A monitor at deployment has
neither, so those rows are diagnostics, not deployable predictors. For one-token answers
the sign of the last-layer margin *is* the greedy answer's correctness, so ``margin_last``
separates correct from wrong perfectly by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from vrp.data.scoring import canonical_answer
from vrp.signals import behavioral, mechanistic, semantic, structural
from vrp.signals.inputs import SignalInputs

DBSCAN_EPS, DBSCAN_MIN_SAMPLES = 1.5, 3
GOLD_ANSWER, GOLD_REGION = "gold answer", "gold region"


class Context:
    """One item's intermediates, each computed on first use and kept."""

    def __init__(self, x: SignalInputs):
        self.x = x
        self._curves: dict[str, np.ndarray] = {}

    def curve(self, name: str) -> np.ndarray | None:
        """The values of curve ``name`` (computed once, in the curve's compute precision; None
        when the item lacks what it reads). Structural curves of a model whose blocks do not all
        have attention are NaN at the blocks without (absent, not filled in)."""
        if name not in self._curves:
            c = CURVE_BY_NAME[name]
            v = c.compute(self)
            on_attention_blocks = c.family == "structural" or c.axis == "block_head"
            if v is not None and on_attention_blocks and self.x.attention_blocks is not None:
                full = np.full((self.x.n_blocks, *np.shape(v)[1:]), np.nan)
                full[list(self.x.attention_blocks)] = v
                v = full
            self._curves[name] = v
        return self._curves[name]

    @cached_property
    def entropy(self) -> np.ndarray:
        """Spatial entropy of each map ``p_l`` (over the blocks with attention)."""
        return structural.spatial_entropy(self.maps)

    @cached_property
    def steps(self) -> int:
        """Answer steps the maps average over: the answer's tokens before EOS (at least 1)."""
        return structural.answer_steps(self.x.n_content, np.asarray(self.x.image_attention).shape[2])

    @cached_property
    def maps(self) -> np.ndarray:
        """``[L, rows, cols]`` the maps ``p_l``: mean over heads and answer steps, renormalized."""
        return structural.layer_maps(self.x.image_attention, steps=self.steps)

    @cached_property
    def head_maps(self) -> np.ndarray:
        """``[L, H, rows, cols]`` each head's map: mean over the answer steps, renormalized."""
        return structural.head_maps(self.x.image_attention, steps=self.steps)

    @cached_property
    def masks(self) -> list[np.ndarray]:
        """Per layer, the top-rho patch set of ``p_l`` (``rho``, ``rho_rule`` of the inputs)."""
        return [structural.top_mass_mask(m, self.x.rho, self.x.rho_rule) for m in self.maps]

    @cached_property
    def region(self) -> np.ndarray | None:
        """``[rows, cols]`` patches inside the gold region(s), or None without regions."""
        return structural.region_mask(list(self.x.regions), self.maps.shape[1:]) if self.x.regions else None

    @cached_property
    def margin(self) -> np.ndarray | None:
        """``[L + 1]`` truth margin per residual index, or None without gold answers."""
        if self.x.ref_logits is None:
            return None
        return mechanistic.truth_margin(self.x.ref_logits, self.x.rival_logits)

    @cached_property
    def contributions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``([L], [L])`` attention and MLP writes projected on the readout direction."""
        x = self.x
        if x.readout_direction is None or x.attn_write is None or x.mlp_write is None:
            return None
        return mechanistic.sublayer_contributions(x.attn_write, x.mlp_write, x.readout_direction)

    @cached_property
    def canonical_samples(self) -> list[str | None] | None:
        """The K samples' canonical answers under the item's task rules (None without samples)."""
        if self.x.samples is None:
            return None
        return [canonical_answer(self.x.task, t) for t in self.x.samples]

    @cached_property
    def semantic_clusters(self) -> list | None:
        """The K samples' semantic cluster labels: the inputs' (an NLI judge's, ``vrp run
        --nli-model``) if given, else the canonical answers (None without samples)."""
        if self.x.samples is None:
            return None
        return list(self.x.semantic_clusters) if self.x.semantic_clusters is not None else self.canonical_samples


@dataclass(frozen=True)
class Curve:
    """A per-layer quantity of one item, stored as ``curve.<name>``.

    ``axis`` is "block" (``[L]``, decoder blocks), "residual" (``[L + 1]``, 0 = ``embed``) or
    "block_head" (``[L, H]``, one value per attention head; NaN rows at blocks without attention).
    """

    name: str
    family: str  # structural | mechanistic
    axis: str  # block | residual
    unit: str
    direction: str  # higher | lower | none
    doc: str
    compute: Callable[[Context], np.ndarray | None] = field(repr=False)  # None: not available for this item
    needs: str = ""
    dtype: str = "float32"  # storage dtype in the shards


@dataclass(frozen=True)
class Signal:
    """One scalar per item: a column of ``items.parquet``."""

    name: str
    family: str  # structural | mechanistic | behavioral
    unit: str
    direction: str  # higher | lower | none
    doc: str
    compute: Callable[[Context], float] = field(repr=False)
    needs: str = ""  # "" | "gold answer" | "gold region": what it reads besides the model


# ---- the curves --------------------------------------------------------------------------


def _region_curve(metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Context], np.ndarray]:
    def compute(ctx: Context) -> np.ndarray:
        if ctx.region is None:  # no gold region: NaN, not absent
            return np.full(ctx.maps.shape[0], np.nan)
        return np.array([float(metric(m, ctx.region)) for m in ctx.maps])

    return compute


def _gold_curve(values: Callable[[Context], np.ndarray | None], axis: str) -> Callable[[Context], np.ndarray]:
    def compute(ctx: Context) -> np.ndarray:
        v = values(ctx)
        if v is not None:
            return v
        return np.full(ctx.x.n_blocks + (axis == "residual"), np.nan)

    return compute


def _head_secondary(ctx: Context) -> np.ndarray:
    # [L, H]: every head's map labelled at once (1,024 maps per item at 7B size)
    return structural.secondary_components_many(ctx.head_maps, ctx.x.rho, ctx.x.rho_rule).astype(np.float64)


def _head_region_mass(ctx: Context) -> np.ndarray:
    hm = ctx.head_maps
    if ctx.region is None:
        return np.full(hm.shape[:2], np.nan)
    return (hm * ctx.region).sum(axis=(-2, -1))


def _head_contrib(ctx: Context) -> np.ndarray:
    if ctx.x.head_contrib is None:  # no gold answer (no readout direction) or no heads recorded
        return np.full(np.asarray(ctx.x.image_attention).shape[:2], np.nan)
    return np.asarray(ctx.x.head_contrib, dtype=np.float64)


def _lens_top(ctx: Context) -> np.ndarray | None:
    # no lens readout: no curve (there is no NaN token id)
    return None if ctx.x.lens_top_ids is None else np.asarray(ctx.x.lens_top_ids, dtype=np.int64)


_S, _M = "structural", "mechanistic"
CURVES: tuple[Curve, ...] = (
    # structural: over the maps p_l, one value per decoder block
    Curve("attn_entropy", _S, "block", "nats", "lower", "spatial entropy H_s of p_l", lambda c: c.entropy),
    Curve("attn_entropy_norm", _S, "block", "fraction", "lower", "H_s / log(grid patches)",
          lambda c: structural.normalized_entropy(c.maps)),
    Curve("attn_entropy_delta", _S, "block", "nats", "none",
          "H_s(l) - H_s(l - 1) (previous block with attention), NaN at the first",
          lambda c: structural.entropy_delta(c.entropy)),
    Curve("attn_secondary", _S, "block", "count", "lower", "C_k - 1: extra 4-connected blobs of the top-rho set",
          lambda c: np.array([structural.component_count(k) - 1 for k in c.masks], dtype=np.float64)),
    Curve("attn_dbscan_secondary", _S, "block", "count", "lower",
          f"DBSCAN clusters - 1 of the top-rho set (eps {DBSCAN_EPS}, min {DBSCAN_MIN_SAMPLES})",
          lambda c: np.array([structural.dbscan_components(k, DBSCAN_EPS, DBSCAN_MIN_SAMPLES) - 1 for k in c.masks],
                             dtype=np.float64)),
    Curve("attn_peakiness", _S, "block", "probability", "higher", "max_s p_l(s)",
          lambda c: c.maps.max(axis=(1, 2))),
    Curve("attn_top_mass_area", _S, "block", "fraction", "lower", "patch fraction holding rho of the mass",
          lambda c: np.array([structural.top_mass_area_fraction(m, c.x.rho) for m in c.maps])),
    Curve("attn_region_mass", _S, "block", "probability", "higher", "p_l mass inside the gold region(s)",
          _region_curve(structural.region_mass), GOLD_REGION),
    Curve("attn_region_ratio", _S, "block", "ratio", "higher", "region mass / region area share (1 = chance)",
          _region_curve(structural.region_mass_ratio), GOLD_REGION),
    Curve("attn_pointing_hit", _S, "block", "0/1", "higher", "argmax patch inside the gold region",
          _region_curve(structural.pointing_hit), GOLD_REGION),
    Curve("attn_image_mass", _S, "block", "probability", "none", "raw attention on image tokens (all heads' mean)",
          lambda c: np.asarray(c.x.image_mass)[:, :, : c.steps].mean(axis=(1, 2))),
    # structural, per attention head: over each head's own map (mean over the answer steps)
    Curve("head_attn_entropy", _S, "block_head", "nats", "lower", "spatial entropy of each head's map",
          lambda c: structural.spatial_entropy(c.head_maps), dtype="float16"),
    Curve("head_attn_peakiness", _S, "block_head", "probability", "higher", "max patch probability of each head's map",
          lambda c: c.head_maps.max(axis=(-2, -1)), dtype="float16"),
    Curve("head_attn_secondary", _S, "block_head", "count", "lower",
          "C_k - 1 of each head's top-rho set", _head_secondary, dtype="float16"),
    Curve("head_attn_image_mass", _S, "block_head", "probability", "none", "each head's raw attention on image tokens",
          lambda c: np.asarray(c.x.image_mass)[:, :, : c.steps].mean(axis=2), dtype="float16"),
    Curve("head_attn_region_mass", _S, "block_head", "probability", "higher",
          "each head's map mass inside the gold region(s)", _head_region_mass, GOLD_REGION, dtype="float16"),
    # mechanistic: the logit lens at the decision position
    Curve("margin", _M, "residual", "logits", "higher", "truth margin M_l per residual index (0 = embed)",
          _gold_curve(lambda c: c.margin, "residual"), GOLD_ANSWER),
    Curve("attn_contrib", _M, "block", "logits", "none", "attention write projected on the readout direction",
          _gold_curve(lambda c: None if c.contributions is None else c.contributions[0], "block"), GOLD_ANSWER),
    Curve("mlp_contrib", _M, "block", "logits", "none", "MLP write projected on the readout direction",
          _gold_curve(lambda c: None if c.contributions is None else c.contributions[1], "block"), GOLD_ANSWER),
    Curve("lens_top_id", _M, "residual", "token id", "none", "the logit lens's top token per residual index",
          _lens_top, dtype="int64"),
    Curve("head_contrib", _M, "block_head", "logits", "none",
          "each attention head's write projected on the readout direction (direct logit attribution)",
          _head_contrib, GOLD_ANSWER),
)  # fmt: skip
CURVE_BY_NAME: dict[str, Curve] = {c.name: c for c in CURVES}


# ---- the signals -------------------------------------------------------------------------


def _last(curve: str) -> Callable[[Context], float]:
    """The curve's value at the last block (the last block with attention for structural curves)."""
    structural_curve = CURVE_BY_NAME[curve].family == "structural"

    def compute(ctx: Context) -> float:
        at = ctx.x.last_attention_block if structural_curve else -1
        return float(np.asarray(ctx.curve(curve), dtype=np.float64)[at])

    return compute


def _mean(curve: str) -> Callable[[Context], float]:
    """The curve's mean over layers, NaN layers ignored (NaN if all are)."""

    def compute(ctx: Context) -> float:
        c = np.asarray(ctx.curve(curve), dtype=np.float64)
        finite = c[~np.isnan(c)]
        return float(finite.mean()) if finite.size else math.nan

    return compute


def _margin(stat: Callable[[np.ndarray], float]) -> Callable[[Context], float]:
    return lambda ctx: math.nan if ctx.margin is None else float(stat(ctx.margin))


def _mlp_share(ctx: Context) -> float:
    return math.nan if ctx.contributions is None else mechanistic.mlp_share_of_growth(*ctx.contributions)


def _sampled(stat: Callable[[list], float]) -> Callable[[Context], float]:
    return lambda ctx: math.nan if ctx.canonical_samples is None else stat(ctx.canonical_samples)


def _semantic(stat: Callable[[list], float]) -> Callable[[Context], float]:
    return lambda ctx: math.nan if ctx.semantic_clusters is None else stat(ctx.semantic_clusters)


_LAST = "at the last decoder layer; `_mean` = mean over layers"
_B = "behavioral"
SIGNALS: tuple[Signal, ...] = (
    # structural: the map p_l = attention over the image grid, mean over heads and answer tokens
    Signal("attn_entropy", _S, "nats", "lower", f"spatial entropy H_s of p_l, {_LAST}", _last("attn_entropy")),
    Signal("attn_entropy_mean", _S, "nats", "lower", "spatial entropy, mean over layers", _mean("attn_entropy")),
    Signal("attn_entropy_norm", _S, "fraction", "lower", "H_s / log(grid patches), last layer",
           _last("attn_entropy_norm")),
    Signal("attn_entropy_norm_mean", _S, "fraction", "lower", "normalized H_s, mean over layers",
           _mean("attn_entropy_norm")),
    Signal("attn_entropy_delta", _S, "nats", "none", "H_s(L) - H_s(L-1) at the last layer",
           _last("attn_entropy_delta")),
    Signal("attn_secondary", _S, "count", "lower", "C_k - 1: extra 4-connected blobs of the top-rho set",
           _last("attn_secondary")),
    Signal("attn_secondary_mean", _S, "count", "lower", "C_k - 1, mean over layers", _mean("attn_secondary")),
    Signal("attn_dbscan_secondary", _S, "count", "lower",
           f"DBSCAN clusters - 1 (eps {DBSCAN_EPS}, min {DBSCAN_MIN_SAMPLES})",
           _last("attn_dbscan_secondary")),
    Signal("attn_dbscan_secondary_mean", _S, "count", "lower", "DBSCAN variant, mean over layers",
           _mean("attn_dbscan_secondary")),
    Signal("attn_peakiness", _S, "probability", "higher", "max_s p_l(s) at the last layer", _last("attn_peakiness")),
    Signal("attn_peakiness_mean", _S, "probability", "higher", "peakiness, mean over layers",
           _mean("attn_peakiness")),
    Signal("attn_top_mass_area", _S, "fraction", "lower", "patch fraction holding rho of the mass",
           _last("attn_top_mass_area")),
    Signal("attn_top_mass_area_mean", _S, "fraction", "lower", "top-mass area, mean over layers",
           _mean("attn_top_mass_area")),
    Signal("attn_image_mass", _S, "probability", "none", "raw attention on image tokens, last layer",
           _last("attn_image_mass")),
    Signal("attn_image_mass_mean", _S, "probability", "none", "image attention mass, mean over layers",
           _mean("attn_image_mass")),
    Signal("attn_region_mass", _S, "probability", "higher", "p_l mass inside the gold region(s)",
           _last("attn_region_mass"), GOLD_REGION),
    Signal("attn_region_mass_mean", _S, "probability", "higher", "region mass, mean over layers",
           _mean("attn_region_mass"), GOLD_REGION),
    Signal("attn_region_ratio", _S, "ratio", "higher", "region mass / region area share (1 = chance)",
           _last("attn_region_ratio"), GOLD_REGION),
    Signal("attn_region_ratio_mean", _S, "ratio", "higher", "region ratio, mean over layers",
           _mean("attn_region_ratio"), GOLD_REGION),
    Signal("attn_pointing_hit", _S, "0/1", "higher", "argmax patch inside the gold region",
           _last("attn_pointing_hit"), GOLD_REGION),
    Signal("attn_pointing_hit_mean", _S, "fraction", "higher", "pointing hits, fraction of layers",
           _mean("attn_pointing_hit"), GOLD_REGION),
    # mechanistic: logit lens at the decision position
    Signal("margin_last", _M, "logits", "higher", "truth margin M_l at the last layer",
           _margin(lambda m: m[-1]), GOLD_ANSWER),
    Signal("margin_peak", _M, "logits", "higher", "largest truth margin over layers",
           _margin(lambda m: m.max()), GOLD_ANSWER),
    Signal("margin_peak_layer", _M, "residual index", "none", "layer of the peak margin (0 = embeddings)",
           _margin(mechanistic.peak_layer), GOLD_ANSWER),
    Signal("margin_positive_from", _M, "residual index", "lower", "first layer from which M_l > 0 (L + 1: never)",
           _margin(mechanistic.positive_from), GOLD_ANSWER),
    Signal("mlp_share", _M, "fraction", "none", "MLP share of positive margin growth over layers", _mlp_share,
           GOLD_ANSWER),
    # behavioral
    Signal("self_consistency", _B, "fraction", "higher", "S_SC: largest canonical-answer cluster / K",
           _sampled(behavioral.self_consistency)),
    Signal("answer_entropy", _B, "nats", "lower", "entropy of the K samples' canonical answers",
           _sampled(behavioral.answer_entropy)),
    Signal("semantic_entropy", _B, "nats", "lower",
           "entropy of the K samples' semantic clusters (NLI bidirectional entailment with --nli-model, "
           "else canonical answers)", _semantic(semantic.semantic_entropy)),
    Signal("semantic_consistency", _B, "fraction", "higher", "largest semantic cluster / K",
           _semantic(semantic.semantic_consistency)),
    Signal("token_confidence", _B, "probability", "higher", "p of the first emitted answer token",
           lambda c: behavioral.token_confidence(c.x.logprobs, c.x.answer_ids)),
    Signal("geo_mean_prob", _B, "probability", "higher", "geometric-mean p of answer tokens to newline",
           lambda c: behavioral.geometric_mean_prob(c.x.logprobs, c.x.answer_ids, stop=c.x.stop)),
    Signal("first_step_entropy", _B, "nats", "lower", "entropy of the first answer step's distribution",
           lambda c: behavioral.first_step_entropy(c.x.logprobs)),
)  # fmt: skip

NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)
SEMANTIC: tuple[str, ...] = ("semantic_entropy", "semantic_consistency")  # read Context.semantic_clusters
BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
NEEDS_NOTE = (
    "needs: what a signal reads besides the model (a deployed monitor has neither gold answers nor gold regions). "
    "With one-token answers and exact-match scoring, margin_last > 0 exactly when the greedy answer is correct, so "
    "margin_last and margin_positive_from have AUROC 1 by construction."
)


@dataclass(frozen=True)
class SignalResult:
    """Every signal and curve of one item.

    Attributes:
        values: signal name -> float, in catalog order (NaN where undefined for this item).
        curves: curve name -> array in its storage dtype (``curve.<name>`` in the shards).
    """

    values: dict[str, float]
    curves: dict[str, np.ndarray]


def compute(source: SignalInputs | Context | object) -> SignalResult:
    """Every signal and curve of the catalog for one item.

    Args:
        source: the item's :class:`SignalInputs`, a :class:`Context` over them (its cached
            intermediates are reused), or an object that makes them with a ``signal_inputs()``
            method (a :class:`vrp.Trace`). The inputs are arrays, not a capture record: what
            the signals read besides the record (the logit-lens readout, the gold regions on
            the patch grid, the samples) needs the model, so the trace assembles them.

    Returns:
        The item's :class:`SignalResult`: the numbers ``vrp run`` stores.
    """
    if isinstance(source, Context):
        ctx = source
    else:
        ctx = Context(source if isinstance(source, SignalInputs) else source.signal_inputs())
    values = {s.name: s.compute(ctx) for s in SIGNALS}
    curves = {c.name: np.asarray(v).astype(c.dtype) for c in CURVES if (v := ctx.curve(c.name)) is not None}
    return SignalResult(values=values, curves=curves)


# ---- derived signals: computed after the run ----------------------------------------------


@dataclass(frozen=True)
class DerivedSignal:
    """A per-item signal computed after ``vrp run`` from what the run directory stores, because
    it needs something the run does not have yet: the probes' train split (heads ranked on it), a
    trained lens, a model outside the VLM. It is written, with an ``id`` column, to the parquet
    file ``source`` of the run directory by the command named in ``made_by``; ``vrp analyze``
    merges every source present into the predictor table beside ``items.parquet``'s signals.
    """

    name: str
    family: str  # structural | mechanistic | behavioral
    unit: str
    direction: str  # higher | lower | none
    doc: str
    source: str  # parquet file relative to the run directory, e.g. "lens/tuned/signals.parquet"
    made_by: str  # the command that writes it, e.g. "vrp lens train"
    needs: str = ""


_HEAD_FEATURES = {  # vrp.analysis.heads: per-head curve -> (unit, direction, needs)
    "entropy": ("nats", "lower", ""), "peakiness": ("probability", "higher", ""),
    "secondary": ("count", "lower", ""), "image_mass": ("probability", "none", ""),
    "region_mass": ("probability", "higher", GOLD_REGION),
}  # fmt: skip
_HEAD_DERIVED = tuple(
    DerivedSignal(f"attn_{f}_dla{k}", "structural", unit, direction,
                  f"mean per-head {f.replace('_', ' ')} of the top-{k} heads by direct logit attribution "
                  "(ranked on the probes' train split)", "probes/head_signals.parquet", "vrp probe", needs)
    for k in (1, 4, 16) for f, (unit, direction, needs) in _HEAD_FEATURES.items()
)  # fmt: skip

_GROUP_DOC = {  # vrp.analysis.head_groups: heads split by the checkpoint's attention-supervision record
    "unsup": "heads whose attention training did NOT supervise (every head of a model without the record)",
    "sup": "heads whose attention training supervised (NaN for a model without the record: every hub model)",
}
_HEAD_GROUP_DERIVED = tuple(
    DerivedSignal(f"attn_{f}_{g}", "structural", unit, direction,
                  f"mean per-head {f.replace('_', ' ')} over the {_GROUP_DOC[g]}, all blocks",
                  "analysis/head_groups.parquet", "vrp analyze", needs)
    for g in ("unsup", "sup") for f, (unit, direction, needs) in _HEAD_FEATURES.items()
)  # fmt: skip

_CONSISTENCY_DERIVED = (  # vrp.analysis.consistency: S_SC predicted from the greedy pass's residual
    DerivedSignal("predicted_consistency", "behavioral", "fraction", "higher",
                  "the consistency head's S_SC from the decision-position residual (no sampling; trained on "
                  "the probes' train split, test items only)", "probes/consistency.parquet", "vrp probe"),
)  # fmt: skip

_TL = dict(source="lens/tuned/signals.parquet", made_by="vrp lens train", needs=GOLD_ANSWER)
_TUNED_LENS_DERIVED = (  # vrp.analysis.lens_run: truth margins under the tuned lens (its last layer: the logit lens)
    DerivedSignal("tuned_margin_peak", _M, "logits", "higher", "largest truth margin over layers, tuned lens", **_TL),
    DerivedSignal("tuned_margin_peak_layer", _M, "residual index", "none",
                  "layer of the peak tuned-lens margin (0 = embeddings)", **_TL),
    DerivedSignal("tuned_margin_positive_from", _M, "residual index", "lower",
                  "first layer from which the tuned-lens margin stays > 0 (L + 1: never)", **_TL),
)  # fmt: skip

# One tuple per source, filled where the signals are computed; names never clash with SIGNALS.
DERIVED: tuple[DerivedSignal, ...] = (*_HEAD_DERIVED, *_HEAD_GROUP_DERIVED, *_CONSISTENCY_DERIVED, *_TUNED_LENS_DERIVED)
DERIVED_BY_NAME: dict[str, DerivedSignal] = {d.name: d for d in DERIVED}


def _check_catalog() -> None:
    for what, names in (("signal", NAMES), ("curve", tuple(c.name for c in CURVES))):
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate {what} names in the catalog: {sorted(dup)}")
    for c in CURVES:
        if c.axis not in ("block", "residual", "block_head") or c.direction not in ("higher", "lower", "none"):
            raise ValueError(f"curve {c.name}: bad axis {c.axis!r} or direction {c.direction!r}")
    for s in (*SIGNALS, *DERIVED):
        if s.direction not in ("higher", "lower", "none") or s.needs not in ("", GOLD_ANSWER, GOLD_REGION):
            raise ValueError(f"signal {s.name}: bad direction {s.direction!r} or needs {s.needs!r}")
    clash = set(NAMES) & {d.name for d in DERIVED}
    if clash or len(DERIVED_BY_NAME) != len(DERIVED):
        raise ValueError(f"derived signal names must be unique and not those of SIGNALS: {sorted(clash)}")


_check_catalog()
