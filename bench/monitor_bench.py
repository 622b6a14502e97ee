"""Cost of answering through the reliability monitor vs plain greedy generate (issues 10 and 23).

For each model, the same batch of items answered three ways, interleaved in one process (each
round runs the three in another of their 6 orders, so every method runs first, second and third
equally often; medians of the rounds after a warm-up, so drift of this shared machine hits all
alike):

    plain     prompt template + processor call + model.generate (greedy, same max_new_tokens)
    monitor   vrp.monitor.Monitor.ask_many: the same prompts, processor call and generate with the
              prefill tap on one decoder block, the probe, and decoding to text
    +head     the same monitor with a consistency head (issue 23) on another decoder block: two
              prefill taps in the same generate, the probe and the head

The monitor's probe weights are random (the cost does not depend on them); it is attached
to the model like a real one (identity and content hashes checked once, outside the timing).
Models: the three shipped toys (16 image tokens) and tiny random "long context" models with
LLaVA-1.5 image geometry (336 px, patch 14: 576 image tokens). Target: monitor / plain <= 1.05.

Two clocks: wall time, and (on CPU with one thread, the default) the thread's CPU time,
which leaves out the time other processes on a shared machine take the core away and so
resolves millisecond differences that wall time on a loaded 2-core machine cannot.

    python bench/monitor_bench.py [--items 8] [--rounds 11] [--new-tokens 8] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from _models import long_context_model


def make_monitor(adapter, out: Path, new_tokens: int, batch: int, head: bool = False):
    import numpy as np

    from vrp.monitor import Monitor
    from vrp.monitor.files import write_monitor
    from vrp.monitor.identity import content_sha256, model_sha256

    d, n = adapter.text_config.hidden_size, len(adapter.decoder_layers())
    rng = np.random.default_rng(0)
    arrays = {"coef": rng.normal(size=d), "mean": np.zeros(d), "scale": np.ones(d), "intercept": np.zeros(1)}
    doc = {
        "model": {"model_type": adapter.model.config.model_type, "sha256": model_sha256(adapter.path),
                  "content_sha256": content_sha256(adapter.path), "d_model": d, "n_layers": n,
                  "dtype": str(adapter.model.dtype).removeprefix("torch."), "name": adapter.path},
        "generation": {"max_new_tokens": new_tokens, "batch_size": batch},
        "probe": {"residual_layer": n // 2 + 1, "input_dtype": "float16"},
        "threshold": {"value": 0.5},
    }  # fmt: skip
    if head:  # the consistency head on another block than the probe: the worst case, two taps
        arrays.update({"consistency.coef": rng.normal(size=d), "consistency.mean": np.zeros(d),
                       "consistency.scale": np.ones(d), "consistency.intercept": np.zeros(1)})  # fmt: skip
        doc["consistency_head"] = {"residual_layer": n, "input_dtype": "float16"}
    return Monitor.load(write_monitor(out, arrays, doc)).attach(adapter)


def head_fixed_cost(monitor) -> dict:
    """What the consistency head adds to one ask_many call, apart from generate (ms, best of 5 x 200):
    the second hook's registration and removal, and the head's arithmetic on the batch's residuals."""
    import timeit

    import torch

    from vrp.models.sites import hooks, residual_site

    ad = monitor.adapter
    h = torch.randn(int(monitor.info["generation"]["batch_size"]), ad.text_config.hidden_size)
    one = {residual_site(monitor.residual_layer): lambda x: None}
    two = {**one, residual_site(monitor.head_layer): lambda x: None}

    def enter(taps):
        with hooks(ad, taps):
            pass

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=200, repeat=5)) / 200 * 1e3

    return {
        "hook": best(lambda: enter(two)) - best(lambda: enter(one)),
        "head": best(lambda: monitor.predicted_consistency(h)),
    }


def bench_model(name: str, model: str, size: int, args, tmp: Path) -> dict:
    import torch

    from vrp.models import load_adapter
    from vrp.world.dataset import generate
    from vrp.world.scene import WorldConfig, render

    ad = load_adapter(model, device=args.device)
    data, _ = generate(args.items, seed=5)
    images = [render(d.scene, WorldConfig()).resize((size, size)) for d in data]
    questions = [d.questions[i % len(d.questions)].question for i, d in enumerate(data)]
    prompts = [ad.prompt(q) for q in questions]
    monitor = make_monitor(ad, tmp / f"mon-{name}", args.new_tokens, len(images))
    with_head = make_monitor(ad, tmp / f"head-{name}", args.new_tokens, len(images), head=True)
    assert with_head.head_layer != with_head.residual_layer
    tok = ad.tokenizer

    def plain():  # what a caller of generate does too: prompts, processor, generate
        enc = ad.encode(images, [ad.prompt(q) for q in questions])
        enc = {k: v.to(ad.model.device) if hasattr(v, "to") else v for k, v in enc.items()}
        with torch.no_grad():
            return ad.model.generate(
                **enc, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )

    def mon():
        return monitor.ask_many(images, questions)

    def head():
        return with_head.ask_many(images, questions)

    seq = plain()
    answers, head_answers = mon(), head()  # warm-up; all answer the same tokens
    gen = seq[:, ad.encode(images, prompts)["input_ids"].shape[1] :].tolist()
    cut = [g[: g.index(tok.eos_token_id) + 1] if tok.eos_token_id in g else g for g in gen]
    assert [list(a.token_ids) for a in answers] == cut, f"{name}: the monitor answered differently"
    assert [list(a.token_ids) for a in head_answers] == cut, f"{name}: the monitor with a head answered differently"
    assert all(a.predicted_consistency is not None for a in head_answers)
    sync = torch.cuda.synchronize if ad.model.device.type == "cuda" else (lambda: None)
    methods = (("plain", plain), ("monitor", mon), ("head", head))
    wall: dict[str, list[float]] = {k: [] for k, _ in methods}
    cpu: dict[str, list[float]] = {k: [] for k, _ in methods}
    orders = list(itertools.permutations(methods))
    for r in range(args.rounds):
        for key, fn in orders[r % len(orders)]:  # every method in every position equally often
            sync()
            t, c = time.perf_counter(), time.thread_time()
            fn()
            sync()
            wall[key].append(time.perf_counter() - t)
            cpu[key].append(time.thread_time() - c)
    n_img = int((ad.encode(images[:1], prompts[:1])["input_ids"] == ad.image_token_id).sum())
    out = {
        "model": name,
        "image_tokens": n_img,
        "steps": max(len(c) for c in cut),
        "fixed_ms": head_fixed_cost(with_head),
    }
    for clock, times in (("wall", wall), ("cpu", cpu)):
        med = {k: statistics.median(v) for k, v in times.items()}
        out[clock] = dict(med)
        for key in ("monitor", "head"):
            extra = [(m - p) * 1e3 for p, m in zip(times["plain"], times[key], strict=True)]  # same round
            out[clock][f"{key}_ratio"] = med[key] / med["plain"]
            out[clock][f"{key}_extra_ms"] = statistics.median(extra)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="toy-llava,toy-paligemma,toy-qwen2vl,long-llava,long-paligemma,long-qwen2vl")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vrp-monbench-") as d:
        run_all(args, Path(d))


def run_all(args, tmp: Path) -> None:
    for name in args.models.split(","):
        model, size = name, 48
        if name.startswith("long-"):
            model, size = long_context_model(tmp / name, name[5:]), 336
        r = bench_model(name, model, size, args, tmp)
        w, c = r["wall"], r["cpu"]
        line = (
            f"{name:16s} img_tokens={r['image_tokens']:4d} steps={r['steps']:2d}  wall: plain {w['plain']:.4f}s "
            f"monitor {w['monitor']:.4f}s = {w['monitor_ratio']:.3f}x (paired extra {w['monitor_extra_ms']:+.2f} ms), "
            f"+head {w['head']:.4f}s = {w['head_ratio']:.3f}x ({w['head_extra_ms']:+.2f} ms)"
        )
        if args.device == "cpu" and args.threads == 1:  # one thread: its CPU time is the whole computation
            line += (
                f"  cpu: plain {c['plain']:.4f}s, monitor {c['monitor_ratio']:.3f}x ({c['monitor_extra_ms']:+.2f} ms), "
                f"+head {c['head_ratio']:.3f}x ({c['head_extra_ms']:+.2f} ms)"
            )
        f = r["fixed_ms"]
        line += f"  head's own work: second hook {f['hook']:.3f} ms + head {f['head']:.3f} ms per call"
        print(line, flush=True)


if __name__ == "__main__":
    main()
