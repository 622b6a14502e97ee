"""Answer, capture and measure one batch of items: the unit of work of every engine.

One :func:`vrp.tracing.trace_batch` per batch (one instrumented greedy ``generate``, and one
batched sampling ``generate`` for self-consistency), then the signal catalog on each trace
(:func:`vrp.signals.compute`). The worker adds only what a run stores besides the signals
(the item's fields, the chosen layers' attention maps and residuals). The result of a batch
depends only on its items and the config, never on which process or engine ran it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vrp.config import RunConfig
from vrp.data.images import open_image
from vrp.data.items import Item
from vrp.runs.rundir import items_schema

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a batch produced: rows (Arrow), arrays for the shard, failures."""

    table: pa.Table
    tensors: dict[str, np.ndarray]
    failures: list[dict]
    meta: dict = field(default_factory=dict)


class BatchWorker:
    """Holds a loaded model and turns batches of items into :class:`BatchResult`."""

    def __init__(self, adapter, cfg: RunConfig):
        self.adapter = adapter
        self.cfg = cfg
        self.n_layers = adapter.n_blocks
        self.stored = cfg.stored_layers(self.n_layers)
        # the stored blocks that have attention maps (all of them but in a hybrid model)
        with_attention = set(adapter.attention_blocks())
        self.stored_attention = [b for b in self.stored if b in with_attention]
        self.trace_cfg = cfg.trace_config()
        self.nli = None  # the judge of the semantic clusters (--nli-model), on the run's device
        if cfg.nli_model is not None:
            from vrp.models.nli import NLIModel

            self.nli = NLIModel(cfg.nli_model, device=cfg.device)

    # ---- one batch ------------------------------------------------------------------

    def run_batch(self, items: list[Item]) -> BatchResult:
        """Answer and measure ``items``; failures of single items never stop the batch."""
        ok, images, failures = [], [], []
        for it in items:
            try:
                images.append(open_image(it.image))
                ok.append(it)
            except ValueError as e:
                failures.append({"id": it.id, "stage": "image", "source": it.image, "error": str(e)})
        rows: list[dict] = []
        arrays: list[dict[str, np.ndarray]] = []
        for row, arr in self._measure(ok, images, failures):
            rows.append(row)
            arrays.append(arr)
        return BatchResult(
            table=pa.Table.from_pylist(rows, schema=items_schema()),
            tensors=_stack(arrays),
            failures=failures,
            meta={"stored_layers": self.stored, "n_layers": self.n_layers, "attention_layers": self.stored_attention},
        )

    def _measure(self, items: list[Item], images: list, failures: list[dict]) -> list[tuple[dict, dict]]:
        """Measure a batch; on CUDA out-of-memory halve it and retry, on any other error
        retry its items one by one so that only the failing item is lost."""
        if not items:
            return []
        try:
            return self._compute(items, images)
        except Exception as e:  # isolate the failing item, keep the rest
            if len(items) == 1:
                failures.append({"id": items[0].id, "stage": "capture", "source": items[0].image,
                                 "error": f"{type(e).__name__}: {e}"})  # fmt: skip
                log.warning("item %s failed: %s: %s", items[0].id, type(e).__name__, e)
                return []
            if _is_oom(e):
                _empty_cache()
                half = len(items) // 2
                log.warning("out of memory on a batch of %d; retrying as %d + %d", len(items), half, len(items) - half)
                parts = [(items[:half], images[:half]), (items[half:], images[half:])]
            else:
                log.warning("a batch of %d failed (%s: %s); answering its items one by one", len(items),
                            type(e).__name__, e)  # fmt: skip
                parts = [([it], [im]) for it, im in zip(items, images, strict=True)]
            return [r for its, ims in parts for r in self._measure(its, ims, failures)]

    # ---- the measurements -----------------------------------------------------------

    def _compute(self, items: list[Item], images: list) -> list[tuple[dict, dict]]:
        from vrp.tracing import trace_batch

        out = []
        traces = trace_batch(self.adapter, items, images, self.trace_cfg)
        semantic = self._semantic_values(traces)
        for t, sem in zip(traces, semantic, strict=True):
            it, result = t.item, t.signal_result()
            row = {
                "id": it.id, "task": it.task, "question": it.question, "answer": t.answer, "gold": list(it.answers),
                "score": t.score, "correct": t.correct, "image": it.image, "n_answer_tokens": len(t.answer_tokens),
                "meta": json.dumps(it.meta, sort_keys=True), "samples": list(t.samples), **result.values, **sem,
            }  # fmt: skip
            arrays = {f"curve.{name}": curve for name, curve in result.curves.items()}
            if self.cfg.store_attention != "none" and self.stored_attention:
                # "heads": raw attention per head (mean over answer steps, not renormalized, so a
                # head's image mass is kept); "mean": the renormalized head-averaged map p_l
                att = t.capture.image_attention[0]  # [L, H, T, rows, cols]: the item's (first) image
                sel = att[:, :, : t.steps].mean(axis=2) if self.cfg.store_attention == "heads" else t.attention_maps()
                at = [t.capture.attention_layers.index(b) for b in self.stored_attention]
                arrays["attention"] = sel[at].astype(np.float32)
                # the pixel box of the original image that the map's grid spans (the report's overlay)
                arrays["view_box"] = np.asarray(t.capture.grids[0].view.box, dtype=np.float32)
            if self.cfg.store_residuals:
                keep = [0] + [i + 1 for i in self.stored]  # residual index: 0 = embed, l + 1 = block l
                arrays["residual"] = t.capture.residual[0][keep].astype(np.float16)
            out.append((row, arrays))
        return out

    def _semantic_values(self, traces: list) -> list[dict[str, float]]:
        """With ``--nli-model``, each trace's semantic signals over the NLI judge's clusters of its
        samples (one batched judge call for all pairs of all items); without, nothing to replace."""
        from vrp.signals.catalog import BY_NAME, SEMANTIC, Context
        from vrp.signals.semantic import cluster_batch

        if self.nli is None:
            return [{} for _ in traces]
        clusters = cluster_batch([t.item.question for t in traces], [t.samples for t in traces], self.nli.entails)
        out = []
        for t, labels in zip(traces, clusters, strict=True):
            ctx = Context(dataclasses.replace(t.signal_inputs(), semantic_clusters=tuple(labels)))
            out.append({name: BY_NAME[name].compute(ctx) for name in SEMANTIC})
        return out


def _stack(arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-item arrays into shard tensors; attention maps stay per item (grids vary)."""
    out: dict[str, np.ndarray] = {}
    if not arrays:
        return out
    for key in arrays[0]:
        if key == "attention":
            for r, a in enumerate(arrays):
                out[f"attention.{r}"] = a["attention"]
        else:
            out[key] = np.stack([a[key] for a in arrays])
    return out


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError)


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
