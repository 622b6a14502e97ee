"""``vrp run``: answer every item greedily, score it, write the run directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from vrp.config import RunConfig
from vrp.data.items import Item
from vrp.data.scoring import is_correct, score_generic
from vrp.data.sources import load_data
from vrp.runs.rundir import append_failures, atomic_write_json, model_identity, versions, write_items
from vrp.stats.intervals import wilson_ci

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs beyond this many pixels


class RunExistsError(FileExistsError):
    """The run directory already holds a run."""


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summarize(rows: list[dict]) -> dict:
    """Accuracy overall and per task, each with its 95% Wilson interval."""

    def acc(rs: list[dict]) -> dict:
        k = sum(bool(r["correct"]) for r in rs)
        lo, hi = wilson_ci(k, len(rs))
        return {"n": len(rs), "correct": k, "accuracy": k / len(rs) if rs else float("nan"), "ci95": [lo, hi]}

    tasks = sorted({r["task"] for r in rows})
    return {"overall": acc(rows), "by_task": {t: acc([r for r in rows if r["task"] == t]) for t in tasks}}


def answer_batch(adapter, items: list[Item], images: list[Image.Image], max_new_tokens: int) -> list[tuple[str, int]]:
    """Greedy answers for a batch: [(decoded text, number of answer tokens before EOS)]."""
    import torch

    tok = adapter.tokenizer
    enc = adapter.encode(images, [adapter.prompt(it.question) for it in items], padding_side="left")
    enc = {k: v.to(adapter.model.device) if hasattr(v, "to") else v for k, v in enc.items()}
    with torch.no_grad():
        out = adapter.model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    results = []
    for ids in new:
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id)]
        ids = [i for i in ids if i != tok.pad_token_id]
        results.append((tok.decode(ids, skip_special_tokens=True).strip(), len(ids)))
    return results


def run(cfg: RunConfig, force: bool = False, on_progress: Callable[[int, int, int], None] | None = None) -> dict:
    """Run the pipeline of ``cfg``; returns the manifest dict written to the run directory.

    Args:
        cfg: the run's configuration.
        force: overwrite a run directory that already holds a finished run.
        on_progress: called as (done, total, failures) after each batch.
    """
    import torch

    from vrp.models import load_adapter

    run_dir = Path(cfg.out)
    if (run_dir / "manifest.json").exists() and not force:
        raise RunExistsError(f"{run_dir} already holds a run (manifest.json); use --force to overwrite it")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("items.parquet", "failures.jsonl", "manifest.json"):
        (run_dir / stale).unlink(missing_ok=True)
    started, t0 = _now(), time.time()
    torch.manual_seed(cfg.seed)

    loaded, provenance = load_data(cfg.data, run_dir, cfg.seed, cfg.world_images)
    failures_path = run_dir / "failures.jsonl"
    append_failures(
        failures_path, [{"id": f.id, "stage": "load", "source": f.source, "error": f.error} for f in loaded.failures]
    )
    items = loaded.items[: cfg.limit] if cfg.limit else loaded.items

    adapter = load_adapter(cfg.model, dtype=getattr(torch, cfg.dtype), device=cfg.device)
    rows: list[dict] = []
    n_failed = len(loaded.failures)
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start : start + cfg.batch_size]
        ok_items, images, failed = [], [], []
        for it in batch:
            try:
                images.append(open_image(it.image))
                ok_items.append(it)
            except ValueError as e:
                failed.append({"id": it.id, "stage": "image", "source": it.image, "error": str(e)})
        if ok_items:
            for it, (text, n_tok) in zip(
                ok_items, answer_batch(adapter, ok_items, images, cfg.max_new_tokens), strict=True
            ):
                score = score_generic(it.task, text, it.answers)
                rows.append(
                    {
                        "id": it.id,
                        "task": it.task,
                        "question": it.question,
                        "answer": text,
                        "gold": list(it.answers),
                        "score": score,
                        "correct": is_correct(score),
                        "image": it.image,
                        "n_answer_tokens": n_tok,
                        "meta": json.dumps(it.meta, sort_keys=True),
                    }
                )
        append_failures(failures_path, failed)
        n_failed += len(failed)
        if on_progress:
            on_progress(min(start + cfg.batch_size, len(items)), len(items), n_failed)

    write_items(run_dir / "items.parquet", rows)
    manifest = {
        "config": cfg.to_dict(),
        "model": {"name": cfg.model, "model_type": adapter.model.config.model_type, **model_identity(adapter.path)},
        "data": provenance,
        "versions": versions(),
        "seed": cfg.seed,
        "started": started,
        "finished": _now(),
        "seconds": round(time.time() - t0, 2),
        "counts": {"items_loaded": len(loaded.items), "answered": len(rows), "failed": n_failed},
        "accuracy": summarize(rows),
    }
    atomic_write_json(run_dir / "manifest.json", manifest)
    return manifest
