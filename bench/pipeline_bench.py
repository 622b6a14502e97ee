"""End-to-end cost of ``vrp run`` per item, stage by stage, against plain greedy ``generate``.

For each model, the same items are answered two ways, interleaved in one process (ABBA order
over ``--rounds`` rounds after a warm-up round; medians; this machine is shared and noisy, so
read the ratios):

    plain      per batch: open the images, the family's prompt, ``adapter.encode`` and greedy
               ``model.generate`` (SDPA, same ``max_new_tokens``, stops at EOS), decode
    pipeline   per batch: exactly what ``vrp run`` does, ``BatchWorker.run_batch`` then
               ``storage.write_shard`` into a scratch run directory

The pipeline's time is split into its stages by timing wrappers around the functions
``run_batch`` calls (nothing is reimplemented here):

    capture    the instrumented greedy pass (``capture_with_prefix``, or ``capture_generate``
               for a family whose cache cannot be continued)
    samples    the K samples continued from the cached prompt (``sample_answers(prefix=...)``)
    signals    ``Trace.signal_result``: the logit-lens readout and ``vrp.signals.compute``
    assembly   the rest of ``run_batch``: images opened, answers decoded and scored, the rows,
               the Arrow table, the arrays stacked for the shard
    storage    ``storage.write_shard`` of the batch (safetensors + parquet, fsynced, renamed)

Then, per run (not per batch), on a run directory made from the measured batches tiled to
``--analysis-items`` items (copies get new ids and images, so the grouped split still holds):

    probes     ``vrp.analysis.probing.train_probes`` (default ``ProbeConfig``)
    analysis   ``vrp.analysis.predictors.analyze`` (default ``AnalyzeConfig``: 10,000 bootstrap
               resamples and 10,000 permutations per row)

each timed at ``n/4`` and ``n`` items, so that the per-run cost splits into a fixed part and a
per-item slope (``t(n) = a + b n``); the table shows the per-item cost of a 9,000-item run,
``a / 9000 + b``. Labels are the model's own correctness when both classes hold at least 10% of
the measured items, else seeded coin flips (random-weight models answer nothing right; the
output says which).

``--paper-shapes`` adds what does not depend on the model's speed at the shapes of
LLaVA-1.5-7B (32 blocks x 32 heads, d = 4096, a 32,064-token vocabulary, 24 x 24 patch grid):
``vrp.signals.compute`` on one real item's inputs (from the first non-toy model) tiled to those
shapes, and ``write_shard`` of a 16-item batch with 7B-sized arrays. ``--paper-probes N``
times ``train_probes`` + ``analyze`` on a synthetic N-item run at 33 residual layers x 4,096
units (``probe_bench.synthetic``; N = 2,000 needs about 2 GB of memory).

Models: the three shipped toys (48 px ShapesWorld images, 16 image tokens) and tiny random models
at real image geometry (``_models``): ``long-llava`` (LLaVA-1.5: 336 px / patch 14, 576 tokens),
``long-paligemma`` and ``long-qwen2vl`` (576 tokens), ``long-llava_next`` (anyres, 2,536 tokens)
and ``long-qwen2_5_vl`` (816 tokens).

    python bench/pipeline_bench.py [--items 32] [--long-items 8] [--rounds 5] [--threads 1]
        [--models toy-llava,...] [--analysis-items 512] [--paper-shapes] [--paper-probes 2000]

On a GPU, with a local checkpoint folder, the same measurement checks the projection in
bench/README.md (POPE-sized images, batches of 16):

    python bench/pipeline_bench.py --models /models/llava-1.5-7b-hf --items 64 --device cuda
        --dtype bfloat16 --image-size 640x480 --paper-shapes   (one command line)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _models import long_context_family, long_context_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

STAGES = ("capture", "samples", "signals", "assembly", "storage")
PER_RUN = ("probes", "analysis")
PAPER_ITEMS = 9000  # POPE-full: the run size the per-run stages are scaled to
# LLaVA-1.5-7B's shapes (Vicuna-7B: 32 blocks x 32 heads, d = 4096; a 32,064-token vocabulary)
PAPER = {"blocks": 32, "heads": 32, "d": 4096, "vocab": 32064, "grid": 24}
DEFAULT_MODELS = (
    "toy-llava,toy-paligemma,toy-qwen2vl,long-llava,long-paligemma,long-qwen2vl,long-llava_next,long-qwen2_5_vl"
)

# ---- the stage timers ---------------------------------------------------------------------

_spent: dict[str, float] = defaultdict(float)


def _timed(stage: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _sync()
            _spent[stage] += time.perf_counter() - t

    return wrapper


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def install_timers() -> None:
    """Wrap the functions ``BatchWorker.run_batch`` reaches, where it reaches them."""
    from vrp.tracing import tracer

    tracer.capture_with_prefix = _timed("capture", tracer.capture_with_prefix)
    tracer.capture_generate = _timed("capture", tracer.capture_generate)
    tracer.sample_answers = _timed("samples", tracer.sample_answers)
    # signal_result is computed once per trace and cached; the wrapper counts every call, and
    # the cached calls cost microseconds
    tracer.Trace.signal_result = _timed("signals", tracer.Trace.signal_result)


# ---- items ------------------------------------------------------------------------------------


def make_items(n: int, root: Path, size: tuple[int, int] | None, seed: int = 0) -> list:
    """``n`` ShapesWorld items (images on disk under ``root``); with ``size`` (width, height) the
    images are resized to it and the gold regions scaled with them."""
    from PIL import Image

    from vrp.data.sources import load_data

    loaded, _ = load_data(f"shapesworld:{max(1, n // 3)}", root, seed, 300)
    items = loaded.items[:n]
    if len(items) < n:
        raise SystemExit(f"ShapesWorld gave {len(items)} items, fewer than the {n} asked for")
    if size is None:
        return items
    out, done = [], {}
    for it in items:
        if it.image not in done:
            im = Image.open(it.image).convert("RGB")
            sx, sy = size[0] / im.width, size[1] / im.height
            path = root / "resized" / Path(it.image).name
            path.parent.mkdir(parents=True, exist_ok=True)
            im.resize(size, Image.BICUBIC).save(path)
            done[it.image] = (str(path), sx, sy)
        path, sx, sy = done[it.image]
        regions = tuple(
            {**r, "box": [r["box"][0] * sx, r["box"][1] * sy, r["box"][2] * sx, r["box"][3] * sy]} for r in it.regions
        )
        out.append(dataclasses.replace(it, image=path, regions=regions))
    return out


def resolve_model(name: str, tmp: Path) -> tuple[str, tuple[int, int] | None]:
    """(model path or toy name, image size or None for the images' own 48 px)."""
    if name in ("long-llava_next", "long-qwen2_5_vl"):
        return long_context_family(tmp / name, name[5:])
    if name.startswith("long-"):
        return long_context_model(tmp / name, name[5:]), (336, 336)
    return name, None


# ---- one model ------------------------------------------------------------------------------


def bench_model(name: str, args, tmp: Path) -> tuple[dict, object]:
    import torch

    from vrp.config import RunConfig
    from vrp.data.images import open_image
    from vrp.models import load_adapter
    from vrp.runs import storage
    from vrp.runs.pipeline import batches
    from vrp.runs.worker import BatchWorker

    model, size = resolve_model(name, tmp)
    slug = name.strip("/").replace("/", "_")
    if args.image_size:
        size = tuple(int(v) for v in args.image_size.split("x"))
    n = args.long_items if name.startswith("long-") else args.items
    items = make_items(n, tmp / f"{slug}-data", size)
    ad = load_adapter(model, dtype=getattr(torch, args.dtype), device=args.device)
    cfg = RunConfig(
        model=model, out=str(tmp / f"{slug}-run"), samples=args.k, max_new_tokens=args.new_tokens,
        batch_size=min(args.batch_size, n), device=args.device, dtype=args.dtype,
    )  # fmt: skip
    worker = BatchWorker(ad, cfg)
    spans = batches(len(items), cfg.batch_size)
    tok = ad.tokenizer

    def plain() -> None:
        for s, e in spans:
            batch = items[s:e]
            images = [open_image(it.image) for it in batch]
            enc = ad.encode(images, [ad.prompt(it.question) for it in batch])
            enc = {k: v.to(ad.model.device) if hasattr(v, "to") else v for k, v in enc.items()}
            with torch.no_grad():
                out = ad.model.generate(
                    **enc, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                )
            tok.batch_decode(out[:, enc["input_ids"].shape[1] :].cpu(), skip_special_tokens=True)

    def pipeline(run_dir: Path) -> dict[str, float]:
        _spent.clear()
        for s, e in spans:
            t = time.perf_counter()
            result = worker.run_batch(items[s:e])
            _spent["run_batch"] += time.perf_counter() - t
            t = time.perf_counter()
            storage.write_shard(run_dir, s, e, result.table, result.tensors, result.failures, result.meta)
            _spent["storage"] += time.perf_counter() - t
        st = dict(_spent)
        st["assembly"] = st.pop("run_batch") - st.get("capture", 0) - st.get("samples", 0) - st.get("signals", 0)
        return st

    times: dict[str, list[float]] = defaultdict(list)
    last_dir = None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        run_dir = tmp / f"{slug}-round{r}"
        order = ("plain", "pipeline") if r % 2 else ("pipeline", "plain")  # ABBA
        rec: dict[str, float] = {}
        for which in order:
            t = time.perf_counter()
            if which == "plain":
                plain()
            else:
                rec.update(pipeline(run_dir))
            rec[which] = time.perf_counter() - t
        if last_dir is not None:
            shutil.rmtree(last_dir, ignore_errors=True)
        last_dir = run_dir
        if r:
            for k, v in rec.items():
                times[k].append(v / n)
    med = {k: statistics.median(v) for k, v in times.items()}
    stages = {k: med.get(k, 0.0) for k in STAGES}
    ratios = [p / q for p, q in zip(times["pipeline"], times["plain"], strict=True)]

    bytes_per_item = storage.shard_bytes(last_dir) / n
    per_run = bench_per_run(last_dir, n, args, tmp / f"{slug}-analysis")
    shutil.rmtree(last_dir, ignore_errors=True)
    enc = ad.encode([open_image(items[0].image)], [ad.prompt(items[0].question)])
    sample_inputs = None
    if not name.startswith("toy-") and args.paper_shapes:
        from vrp.tracing import trace_batch

        t = trace_batch(ad, items[:1], [open_image(items[0].image)], cfg.trace_config())[0]
        sample_inputs = t.signal_inputs()
    row = {
        "model": name,
        "items": n,
        "batch_size": cfg.batch_size,
        "image_tokens": int((enc["input_ids"] == ad.image_token_id).sum()),
        "prompt_tokens": int(enc["input_ids"].shape[1]),
        "blocks": ad.n_blocks,
        "continues_from_cache": bool(ad.continues_from_cache),
        "plain_s": med["plain"],
        "pipeline_s": med["pipeline"],
        "pipeline/plain": statistics.median(ratios),
        "pipeline/plain_range": [min(ratios), max(ratios)],
        "stages_s": stages,
        "stage_spread": {k: [min(times[k]), max(times[k])] for k in STAGES if times[k]},
        "shard_bytes_per_item": bytes_per_item,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        **per_run,
    }
    return row, sample_inputs  # the model is freed when the closures go


# ---- per run: probes and analysis -----------------------------------------------------------


def tile_run(src: Path, dst: Path, n_out: int, batch_size: int, seed: int = 0) -> str:
    """A run directory of ``n_out`` items made of copies of ``src``'s committed items (new ids
    and image paths per copy); returns where the labels came from."""
    import pyarrow as pa

    from vrp.runs import storage
    from vrp.runs.rundir import write_table

    rows, arrays = [], defaultdict(list)
    for ids, arr in storage.iter_shards(src):
        for k, v in arr.items():
            if k.startswith("attention."):
                arrays["attention"].append(v)
            else:
                arrays[k].extend(v)
        del ids
    table = storage.read_rows(src)
    base = table.to_pylist()
    n = len(base)
    y = np.array([bool(r["correct"]) for r in base])
    minority = min(y.mean(), 1 - y.mean())
    labels = "the model's correctness"
    if minority < 0.1:
        rng = np.random.default_rng(seed)
        labels = f"seeded coin flips (the model is right on {y.mean():.0%} of the items)"
    for i in range(n_out):
        r = dict(base[i % n])
        copy = i // n
        r["id"] = f"{r['id']}#c{copy}"
        r["image"] = f"{r['image']}#c{copy}"
        if minority < 0.1:
            r["correct"] = bool(rng.random() < 0.5)
        rows.append(r)
    full = pa.Table.from_pylist(rows, schema=table.schema)
    meta = None
    first = next(iter(storage.completed(src).values()))
    from safetensors import safe_open

    with safe_open(str(first.with_suffix(".safetensors")), framework="np") as f:
        meta = json.loads(f.metadata()["meta"])
    for s in range(0, n_out, batch_size):
        e = min(s + batch_size, n_out)
        tensors = {}
        for k, v in arrays.items():
            if k == "attention":
                for j in range(s, e):
                    tensors[f"attention.{j - s}"] = v[j % n]
            else:
                tensors[k] = np.stack([v[j % n] for j in range(s, e)])
        storage.write_shard(dst, s, e, full.slice(s, e - s), tensors, [], meta)
    write_table(dst / "items.parquet", full)
    return labels


def bench_per_run(src: Path, n_measured: int, args, root: Path) -> dict:
    """``train_probes`` and ``analyze`` at n/4 and n items: per-run fixed cost and per-item slope."""
    import warnings

    from vrp.analysis.predictors import analyze
    from vrp.analysis.probing import train_probes

    sizes = sorted({max(n_measured, args.analysis_items // 4), max(n_measured, args.analysis_items)})
    out: dict = {"per_run": {}}
    for size in sizes:
        d = root / f"n{size}"
        out["labels"] = tile_run(src, d, size, args.batch_size)
        rec = {}
        for stage, fn in (("probes", train_probes), ("analysis", analyze)):
            t = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn(d)
                rec[stage] = time.perf_counter() - t
            except Exception as e:  # report, do not stop the benchmark
                rec[stage] = float("nan")
                out.setdefault("per_run_errors", []).append(f"{stage} at n={size}: {type(e).__name__}: {e}")
        out["per_run"][size] = rec
        shutil.rmtree(d, ignore_errors=True)
    for stage in PER_RUN:
        ok = [(size, rec[stage]) for size, rec in out["per_run"].items() if np.isfinite(rec[stage])]
        if not ok:
            out[f"{stage}_fixed_s"] = out[f"{stage}_slope_s"] = out[f"{stage}_s_per_item_at_{PAPER_ITEMS}"] = np.nan
            continue
        (lo, t_lo), (hi, t_hi) = ok[0], ok[-1]
        slope = (t_hi - t_lo) / (hi - lo) if hi > lo else t_hi / hi  # one size: all of it per item
        fixed = max(0.0, t_hi - slope * hi)
        out[f"{stage}_fixed_s"], out[f"{stage}_slope_s"] = fixed, slope
        out[f"{stage}_s_per_item_at_{PAPER_ITEMS}"] = fixed / PAPER_ITEMS + max(slope, 0.0)
    return out


# ---- at LLaVA-1.5-7B's shapes -----------------------------------------------------------------


def _resize_axis(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """``a`` with ``axis`` made ``n`` long by repeating its entries cyclically."""
    idx = np.arange(n) % a.shape[axis]
    return np.take(a, idx, axis=axis)


def paper_inputs(x):
    """One item's real :class:`SignalInputs` tiled to LLaVA-1.5-7B's shapes."""
    L, H, d, V, g = PAPER["blocks"], PAPER["heads"], PAPER["d"], PAPER["vocab"], PAPER["grid"]
    att = _resize_axis(_resize_axis(np.asarray(x.image_attention), 0, L), 1, H)
    rows, cols = att.shape[-2:]
    if (rows, cols) != (g, g):
        att = _resize_axis(_resize_axis(att, 3, g), 4, g)
    att = att / att.sum(axis=(-2, -1), keepdims=True) * 0.3  # a third of the attention on the image
    lp = np.asarray(x.logprobs)
    pad = np.full((lp.shape[0], V - lp.shape[1]), -1e4, dtype=lp.dtype) if lp.shape[1] < V else lp[:, :0]
    return dataclasses.replace(
        x, image_attention=att.astype(np.float32), image_mass=_resize_axis(_resize_axis(x.image_mass, 0, L), 1, H),
        logprobs=np.concatenate([lp, pad], axis=1),
        ref_logits=None if x.ref_logits is None else _resize_axis(x.ref_logits, 0, L + 1),
        rival_logits=None if x.rival_logits is None else _resize_axis(x.rival_logits, 0, L + 1),
        lens_top_ids=None if x.lens_top_ids is None else _resize_axis(x.lens_top_ids, 0, L + 1),
        readout_direction=None if x.readout_direction is None else _resize_axis(x.readout_direction, 0, d),
        attn_write=None if x.attn_write is None else _resize_axis(_resize_axis(x.attn_write, 0, L), 1, d),
        mlp_write=None if x.mlp_write is None else _resize_axis(_resize_axis(x.mlp_write, 0, L), 1, d),
        attention_blocks=None,
    )  # fmt: skip


def bench_paper_shapes(x, rounds: int, tmp: Path, batch: int = 16) -> dict:
    """Signals of one item and the shard of a ``batch``-item batch at LLaVA-1.5-7B's shapes."""
    import pyarrow as pa

    from vrp.runs import storage
    from vrp.runs.rundir import items_schema
    from vrp.signals import compute
    from vrp.signals.catalog import Context

    big = paper_inputs(x)
    res = compute(Context(big))  # warm-up, and the curves' shapes
    sig = []
    for _ in range(rounds):
        t = time.perf_counter()
        compute(Context(big))
        sig.append(time.perf_counter() - t)
    L, d, g = PAPER["blocks"], PAPER["d"], PAPER["grid"]
    rng = np.random.default_rng(0)
    row = {name: 0.5 for name in res.values}
    base = {"task": "existence", "question": "Is there a dog in the image?", "answer": "Yes", "gold": ["yes"],
            "score": 1.0, "correct": True, "image": "coco/val2014/COCO_val2014_000000000042.jpg",
            "n_answer_tokens": 1, "meta": "{}", "samples": ["Yes"] * 10}  # fmt: skip
    rows = [{"id": f"pope-{i}", **base, **row} for i in range(batch)]
    table = pa.Table.from_pylist(rows, schema=items_schema())
    tensors = {"residual": rng.standard_normal((batch, L + 1, d)).astype(np.float16),
               "view_box": np.tile(np.array([0, 0, 640, 480], np.float32), (batch, 1)),
               **{f"curve.{k}": np.stack([v] * batch) for k, v in res.curves.items()},
               **{f"attention.{i}": rng.random((L, g, g), dtype=np.float32) for i in range(batch)}}  # fmt: skip
    store = []
    for r in range(rounds):
        t = time.perf_counter()
        storage.write_shard(tmp / "paper-shard", r * batch, (r + 1) * batch, table, tensors, [], {})
        store.append(time.perf_counter() - t)
    nbytes = storage.shard_bytes(tmp / "paper-shard") / (rounds * batch)
    shutil.rmtree(tmp / "paper-shard", ignore_errors=True)
    return {
        "signals_s_per_item": statistics.median(sig),
        "storage_s_per_item": statistics.median(store) / batch,
        "shard_bytes_per_item": nbytes,
        "from": "one real item's inputs tiled",
    }


def bench_paper_probes(n: int, tmp: Path) -> dict:
    """``train_probes`` + ``analyze`` on a synthetic n-item run with 33 residual layers x 4,096 units."""
    import warnings

    import pyarrow as pa
    from probe_bench import synthetic

    from vrp.analysis.predictors import analyze
    from vrp.analysis.probing import train_probes
    from vrp.runs import storage
    from vrp.runs.rundir import items_schema, write_table
    from vrp.signals.catalog import CURVES, NAMES

    L, d = PAPER["blocks"], PAPER["d"]
    X, y, images = synthetic(n, L + 1, d)
    X = X.astype(np.float16)
    rng = np.random.default_rng(0)
    rows = [
        {"id": f"it{i}", "task": "existence", "question": "q", "answer": "yes", "gold": ["yes"],
         "score": float(y[i]), "correct": bool(y[i]), "image": f"img{images[i]}", "n_answer_tokens": 1,
         "meta": "{}", "samples": ["yes"] * 10, **{s: float(rng.random()) for s in NAMES}}
        for i in range(n)
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=items_schema())
    run = tmp / "paper-probes"
    for s in range(0, n, 256):
        e = min(s + 256, n)
        tensors = {"residual": X[s:e]}
        for c in CURVES:
            width = L + 1 if c.name == "margin" else L
            tensors[f"curve.{c.name}"] = rng.random((e - s, width)).astype(np.float32)
        storage.write_shard(run, s, e, table.slice(s, e - s), tensors, [], {"stored_layers": list(range(L))})
    del X
    write_table(run / "items.parquet", table)
    out = {"items": n, "layers": L + 1, "units": d}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stage, fn in (("probes", train_probes), ("analysis", analyze)):
            t = time.perf_counter()
            fn(run)
            out[f"{stage}_s"] = time.perf_counter() - t
    shutil.rmtree(run, ignore_errors=True)
    return out


# ---- report ------------------------------------------------------------------------------------


def machine_state() -> dict:
    import torch
    import transformers

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }


def print_table(r: dict) -> None:
    per_run = {s: r[f"{s}_s_per_item_at_{PAPER_ITEMS}"] for s in PER_RUN}
    total = sum(r["stages_s"].values()) + sum(v for v in per_run.values() if np.isfinite(v))
    print(
        f"\n{r['model']}: {r['items']} items in batches of {r['batch_size']}, {r['image_tokens']} image tokens, "
        f"{r['prompt_tokens']} prompt tokens, {r['blocks']} blocks"
    )
    print(f"  {'stage':10s} {'s / item':>10s} {'share':>7s}")
    for k, v in {**r["stages_s"], **per_run}.items():
        share = v / total if np.isfinite(v) else float("nan")
        note = ""
        if k in PER_RUN:
            at = ", ".join(f"{rec[k]:.2f} s at n = {n}" for n, rec in r["per_run"].items())
            note = f"   per run: {at} -> per item at n = {PAPER_ITEMS}"
        print(f"  {k:10s} {v:10.4f} {share:7.1%}{note}")
    print(f"  {'total':10s} {total:10.4f}")
    lo, hi = r["pipeline/plain_range"]
    print(
        f"  ratio: pipeline {r['pipeline_s']:.4f} s / item vs plain greedy generate {r['plain_s']:.4f} s / item "
        f"= {r['pipeline/plain']:.2f}x (rounds: {lo:.2f}-{hi:.2f}x); shards {r['shard_bytes_per_item'] / 1024:.1f} "
        f"KiB / item; labels: {r['labels']}",
        flush=True,
    )
    if r["peak_gpu_gib"] is not None:
        print(f"  peak GPU memory {r['peak_gpu_gib']:.1f} GiB")
    for e in r.get("per_run_errors", []):
        print(f"  !! {e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=32, help="items per toy model")
    ap.add_argument("--long-items", type=int, default=8, help="items per long-context random model")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--k", type=int, default=10, help="samples per item")
    ap.add_argument("--new-tokens", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="names above, or local model folders")
    ap.add_argument("--image-size", help="WxH for every model's images (default: 48 px toys, the long models' own)")
    ap.add_argument("--device", default="cpu", help="e.g. cuda (a GPU check of the projection)")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16 (7B checkpoints on a GPU)")
    ap.add_argument("--analysis-items", type=int, default=512, help="items of the tiled run for probes/analysis")
    ap.add_argument("--paper-shapes", action="store_true", help="signals and storage at LLaVA-1.5-7B's shapes")
    ap.add_argument("--paper-probes", type=int, default=0, help="items of a synthetic 7B-shaped run to probe")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    state = machine_state()
    print(json.dumps(state), flush=True)
    install_timers()
    tmp = Path(tempfile.mkdtemp(prefix="vrp-pipebench-"))
    rows, inputs = [], None
    try:
        for name in args.models.split(","):
            row, x = bench_model(name, args, tmp)
            if inputs is None:
                inputs = x
            rows.append(row)
            print_table(row)
            gc.collect()
        paper = {}
        if args.paper_shapes:
            if inputs is None:
                raise SystemExit(
                    "--paper-shapes needs a model other than the toys among --models (its item's inputs are tiled)"
                )
            paper["shapes"] = bench_paper_shapes(inputs, args.rounds * 2 + 1, tmp)
            print(f"\nat LLaVA-1.5-7B's shapes {PAPER}: {json.dumps(paper['shapes'])}", flush=True)
        if args.paper_probes:
            paper["probes"] = bench_paper_probes(args.paper_probes, tmp)
            print(f"synthetic 7B-shaped run: {json.dumps(paper['probes'])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print("\n| model | image tokens | plain s/item | pipeline s/item | pipeline / plain |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['image_tokens']:,} | {r['plain_s']:.4f} | {r['pipeline_s']:.4f} "
            f"| **{r['pipeline/plain']:.2f}x** |"
        )
    out = {"machine": state, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "paper": paper}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(state))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
