"""The clean pass of an experiment: answers, margins, each item's attention map and unit scales.

One instrumented ``generate`` per batch (the capture engine), keeping only what conditions
need: the answers and truth margins (the paired baseline), the item's own attention map over
the patch grid at the chosen layer (to rank patches), and per-unit standard deviations at the
decision position (to clamp units to a multiple of their scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vrp.capture.records import answer_end
from vrp.data.items import Item
from vrp.interventions.runner import Answers, iter_batches, score
from vrp.models.grids import View
from vrp.signals import structural


@dataclass
class CleanPass:
    """The unintervened baseline of an experiment's items.

    Attributes:
        answers: texts, correctness, margins.
        views: per item, the canonical view of its (first) image (grid and pixel box).
        maps: per item ``[rows, cols]`` attention map at ``map_layer`` (None when not asked).
        std_residual: ``[L + 1, d]`` std of each residual unit (index 0 = embeddings, i + 1 =
            output of block i) at the decision position over the items; None when not asked.
        std_mlp: ``[L, d]`` likewise for the MLP writes.
    """

    answers: Answers
    views: list[View]
    maps: list[np.ndarray] | None
    std_residual: np.ndarray | None
    std_mlp: np.ndarray | None


def aggregate_map(att: np.ndarray, steps: int, aggregation: str) -> np.ndarray:
    """One layer's ``[H, T, rows, cols]`` attention -> a ``[rows, cols]`` map summing to 1.

    mean: mean over heads and the first ``steps`` answer tokens (the run's ``p_l``); max: max over
    heads of the step-mean; first: mean over heads at the first answer token.
    """
    if aggregation == "mean":
        m = att[:, :steps].mean(axis=(0, 1))
    elif aggregation == "max":
        m = att[:, :steps].mean(axis=1).max(axis=0)
    elif aggregation == "first":
        m = att[:, 0].mean(axis=0)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return structural.layer_maps(m[None, None, None], steps=1)[0]  # renormalized, same checks as the run


def clean_pass(
    adapter,
    items: list[Item],
    max_new_tokens: int,
    batch_size: int,
    map_layer: int | None = None,
    aggregation: str = "mean",
    unit_stats: bool = False,
    tick: Callable[[int], None] | None = None,
) -> CleanPass:
    """Answer ``items`` without intervention and keep the baseline quantities (see :class:`CleanPass`)."""
    from vrp.capture.engine import CaptureConfig, capture_generate

    n_layers = adapter.n_blocks
    if map_layer is not None and not -n_layers <= map_layer < n_layers:
        raise ValueError(f"map layer {map_layer} is outside the model's {n_layers} decoder blocks")
    layer = None if map_layer is None else map_layer % n_layers
    cfg = CaptureConfig(
        layers=None if unit_stats else ((layer,) if layer is not None else ()),
        attention=layer is not None, residuals=unit_stats, writes=unit_stats, dtype="float32",
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    texts, correct, margin, views, maps = [], [], [], [], []
    sums = None
    for batch in iter_batches(adapter, items, batch_size):
        caps = capture_generate(adapter, batch.images, batch.prompts, cfg)
        for it, cap in zip(batch.items, caps, strict=True):
            text, ok, m = score(adapter, it, cap)
            texts.append(text)
            correct.append(ok)
            margin.append(m)
            views.append(cap.grids[0].view)
            if layer is not None:
                n_content = answer_end(cap.answer_ids, adapter.stop_token_ids)
                if layer not in cap.attention_layers:
                    raise ValueError(f"block {layer} has no attention map to rank patches by (blocks with maps: "
                                     f"{list(adapter.attention_blocks())})")  # fmt: skip
                pos = cap.attention_layers.index(layer)
                att = cap.image_attention[0][pos]  # [H, T, rows, cols]
                maps.append(aggregate_map(att, structural.answer_steps(n_content, att.shape[1]), aggregation))
            if unit_stats:
                vecs = [cap.residual[0].astype(np.float64), cap.mlp_write[0].astype(np.float64)]
                if sums is None:
                    sums = [[np.zeros_like(v), np.zeros_like(v)] for v in vecs]
                for s, v in zip(sums, vecs, strict=True):
                    s[0] += v
                    s[1] += v * v
        if tick:
            tick(len(batch.items))
    n = len(items)

    def std(s):
        mean = s[0] / n
        return np.sqrt(np.maximum(s[1] / n - mean * mean, 0.0))

    return CleanPass(
        answers=Answers([it.id for it in items], texts, np.asarray(correct, bool), np.asarray(margin, np.float64)),
        views=views,
        maps=maps if layer is not None else None,
        std_residual=std(sums[0]) if sums else None,
        std_mlp=std(sums[1]) if sums else None,
    )
