"""Answer, capture and measure one batch of items: the unit of work of every engine.

One instrumented greedy ``generate`` (answers, attention over patches, residuals, writes,
log-probabilities), the logit-lens readout at the decision position, one batched sampling
``generate`` for self-consistency, then the pure signal functions. The result of a batch
depends only on its items and the config, never on which process or engine ran it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from vrp.capture.records import decode_answer
from vrp.config import RunConfig
from vrp.data.items import Item
from vrp.data.scoring import canonical_answer, is_correct, score_generic
from vrp.runs.rundir import items_schema
from vrp.signals import behavioral, mechanistic, structural

log = logging.getLogger(__name__)
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs beyond this many pixels

# structural_curves key -> column / curve name
_STRUCT = {
    "entropy": "attn_entropy",
    "entropy_norm": "attn_entropy_norm",
    "entropy_delta": "attn_entropy_delta",
    "secondary_components": "attn_secondary",
    "dbscan_secondary": "attn_dbscan_secondary",
    "peakiness": "attn_peakiness",
    "top_mass_area": "attn_top_mass_area",
    "region_mass": "attn_region_mass",
    "region_mass_ratio": "attn_region_ratio",
    "pointing_hit": "attn_pointing_hit",
    "image_mass": "attn_image_mass",  # added by the worker, not by structural_curves
}


def open_image(path: str) -> Image.Image:
    """Open and fully decode an image as RGB; raises ValueError with the reason."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"image is {w}x{h} = {w * h} pixels, over the {MAX_IMAGE_PIXELS} limit")
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def item_seed(run_seed: int, item_id: str) -> int:
    """The sampling seed of one item: a stable hash of (run seed, item id)."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{item_id}".encode()).digest()[:8], "little")


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
        self.n_layers = len(adapter.decoder_layers())
        self.stored = cfg.stored_layers(self.n_layers)

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
            meta={"stored_layers": self.stored, "n_layers": self.n_layers},
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
        from vrp.capture.engine import CaptureConfig, capture_generate
        from vrp.capture.lens import lens_readout, reference_ids
        from vrp.capture.sampling import sample_answers

        cfg, adapter = self.cfg, self.adapter
        prompts = [adapter.prompt(it.question) for it in items]
        capture_cfg = CaptureConfig(dtype="float32", max_new_tokens=cfg.max_new_tokens)
        samples = None
        if cfg.samples:
            # the K samples continue from the greedy pass's cached prompt (no second prefill)
            caps, prefix = capture_generate(adapter, images, prompts, capture_cfg, keep_prefix=True)
            samples = sample_answers(
                adapter, images, prompts, [item_seed(cfg.seed, it.id) for it in items],
                k=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                prefix=prefix,
            )  # fmt: skip
            del prefix
        else:
            caps = capture_generate(adapter, images, prompts, capture_cfg)
        tok = adapter.tokenizer
        out = []
        for b, (it, im, cap) in enumerate(zip(items, images, caps, strict=True)):
            ids = [i for i in cap.answer_ids.tolist() if i != tok.eos_token_id]
            text = decode_answer(tok, cap.answer_ids)
            score = score_generic(it.task, text, it.answers)
            lens = lens_readout(adapter, cap.residual[0], reference_ids(tok, it.answers))
            row = {
                "id": it.id, "task": it.task, "question": it.question, "answer": text, "gold": list(it.answers),
                "score": score, "correct": is_correct(score), "image": it.image, "n_answer_tokens": len(ids),
                "meta": json.dumps(it.meta, sort_keys=True),
            }  # fmt: skip
            arrays: dict[str, np.ndarray] = {}
            self._structural(it, im, cap, len(ids), row, arrays)
            self._mechanistic(cap, lens, row, arrays)
            self._behavioral(it, cap, samples[b] if samples else None, row)
            out.append((row, arrays))
        return out

    def _structural(self, it: Item, im, cap, n_content: int, row: dict, arrays: dict) -> None:
        cfg = self.cfg
        att = cap.image_attention[0]  # [L, H, T, rows, cols]: the item's (first) image
        steps = max(1, min(n_content, att.shape[2]))
        maps = structural.layer_maps(att, steps=steps)  # [L, rows, cols]
        boxes = [b for r in it.regions if (b := self.adapter.view_box(r["box"], im.size)) is not None]
        region = structural.region_mask(boxes, maps.shape[1:]) if boxes else None
        curves = structural.structural_curves(maps, rho=cfg.rho, rule=cfg.rho_rule, region=region)
        for key in ("region_mass", "region_mass_ratio", "pointing_hit"):  # no gold region: NaN, not absent
            curves.setdefault(key, np.full(maps.shape[0], np.nan))
        curves["image_mass"] = cap.image_mass[:, :, :steps].mean(axis=(1, 2))
        summary = structural.summarize_curves(curves)
        for key, value in summary.items():
            base = key.removesuffix("_mean")
            col = _STRUCT[base] + key[len(base) :]
            row[col] = value
        for key, curve in curves.items():
            arrays["curve." + _STRUCT[key]] = curve.astype(np.float32)
        if cfg.store_attention != "none" and self.stored:
            # "heads": raw attention per head (mean over answer steps, not renormalized, so a
            # head's image mass is kept); "mean": the renormalized head-averaged map p_l
            sel = att[:, :, :steps].mean(axis=2) if cfg.store_attention == "heads" else maps
            arrays["attention"] = sel[self.stored].astype(np.float32)

    def _mechanistic(self, cap, lens, row: dict, arrays: dict) -> None:
        margin = mechanistic.truth_margin(lens.ref_logits, lens.rival_logits)
        c_attn, c_mlp = mechanistic.sublayer_contributions(cap.attn_write[0], cap.mlp_write[0], lens.direction)
        row.update(
            margin_last=float(margin[-1]),
            margin_peak=float(margin.max()),
            margin_peak_layer=float(mechanistic.peak_layer(margin)),
            margin_positive_from=float(mechanistic.positive_from(margin)),
            mlp_share=mechanistic.mlp_share_of_growth(c_attn, c_mlp),
        )
        arrays["curve.margin"] = margin.astype(np.float32)
        arrays["curve.attn_contrib"] = c_attn.astype(np.float32)
        arrays["curve.mlp_contrib"] = c_mlp.astype(np.float32)
        arrays["curve.lens_top_id"] = lens.top_ids
        if self.cfg.store_residuals:
            keep = [0] + [i + 1 for i in self.stored]
            arrays["residual"] = cap.residual[0][keep].astype(np.float16)

    def _behavioral(self, it: Item, cap, sampled, row: dict) -> None:
        tok = self.adapter.tokenizer
        ids = cap.answer_ids.tolist()
        stop = next(
            (i for i, t in enumerate(ids) if t == tok.eos_token_id or "\n" in tok.decode([t])), len(ids)
        )  # fmt: skip
        row["token_confidence"] = behavioral.token_confidence(cap.logprobs, cap.answer_ids)
        row["geo_mean_prob"] = behavioral.geometric_mean_prob(cap.logprobs, cap.answer_ids, stop=stop)
        row["first_step_entropy"] = behavioral.first_step_entropy(cap.logprobs)
        if sampled is None:
            row["self_consistency"] = row["answer_entropy"] = float("nan")
            row["samples"] = []
            return
        canon = [canonical_answer(it.task, t) for t in sampled.texts]
        row["self_consistency"] = behavioral.self_consistency(canon)
        row["answer_entropy"] = behavioral.answer_entropy(canon)
        row["samples"] = list(sampled.texts)


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
