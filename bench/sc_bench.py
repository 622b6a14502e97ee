"""Cost of self-consistency (K samples) relative to one greedy answer.

For each model, three ways of answering one item, measured side by side in one process
(this machine is shared and noisy, so only ratios are meaningful):

    greedy      one plain greedy ``model.generate`` (batch of 1 item)
    batched     K samples by ``vrp.capture.sampling.sample_answers``: one generate call
                over B x K rows, seeded per item and sample (vision tower and prompt run again)
    continued   the same K samples continued from the cached prompt of the greedy capture
                pass (``capture_with_prefix``), as ``vrp run`` draws them: only
                the sampling call is timed, the capture pass it continues from is not
    sequential  K calls of HF ``generate(do_sample=True, temperature, top_p)``, one sample
                each (what a naive implementation does)

Times are medians over rounds in which the three run in turn (so drift of the machine hits
all three alike), after one warm-up round. All three decode up to ``--new-tokens`` tokens
and stop at EOS. Models: the three shipped toys, and with ``--long`` tiny random models of
LLaVA-1.5 image geometry (576 image tokens), where prefill is no longer negligible.

    python bench/sc_bench.py [--k 10] [--rounds 11] [--threads 2] [--long]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _models import long_context_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_model(model: str, k: int, rounds: int, new_tokens: int, size: int, temperature: float, top_p: float) -> dict:
    import torch

    from vrp.capture.engine import CaptureConfig, capture_with_prefix
    from vrp.capture.sampling import sample_answers
    from vrp.models import load_adapter
    from vrp.world.dataset import generate
    from vrp.world.scene import WorldConfig, render

    ad = load_adapter(model)
    data, _ = generate(1, seed=5)
    image = render(data[0].scene, WorldConfig()).resize((size, size))
    # a spatial question when there is one (the toys' least certain answers), else the first
    q = next((q for q in data[0].questions if q.task == "spatial"), data[0].questions[0])
    prompt = ad.prompt(q.question)
    pad = ad.tokenizer.pad_token_id

    def greedy():
        enc = ad.encode([image], [prompt])
        with torch.no_grad():
            ad.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)

    def batched():
        sample_answers(ad, [image], [prompt], [0], k=k, temperature=temperature, top_p=top_p, max_new_tokens=new_tokens)

    def continued():
        _, prefix = capture_with_prefix(
            ad, [image], [prompt], CaptureConfig(max_new_tokens=new_tokens, attention=False)
        )
        t = time.perf_counter()
        sample_answers(
            ad, [image], [prompt], [0], k=k, temperature=temperature, top_p=top_p, max_new_tokens=new_tokens,
            prefix=prefix,
        )  # fmt: skip
        return time.perf_counter() - t

    def sequential():
        enc = ad.encode([image], [prompt])
        for s in range(k):
            torch.manual_seed(s)
            with torch.no_grad():
                ad.model.generate(
                    **enc, max_new_tokens=new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                    pad_token_id=pad,
                )  # fmt: skip

    fns = {"greedy": greedy, "batched": batched, "continued": continued, "sequential": sequential}
    for f in fns.values():
        f()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            own = f()  # "continued" times its own sampling call only
            times[name].append(own if own is not None else time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    n_img = int((ad.encode([image], [prompt])["input_ids"] == ad.image_token_id).sum())
    return {
        "image_tokens": n_img,
        **{f"{name}_s": v for name, v in med.items()},
        "batched/greedy": med["batched"] / med["greedy"],
        "continued/greedy": med["continued"] / med["greedy"],
        "sequential/greedy": med["sequential"] / med["greedy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--new-tokens", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--models", default="toy-llava,toy-paligemma,toy-qwen2vl")
    ap.add_argument("--long", action="store_true", help="also the 576-image-token random models")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    if args.long:
        names += ["long-llava", "long-paligemma", "long-qwen2vl"]
    tmp = Path(tempfile.mkdtemp(prefix="vrp-scbench-"))
    rows = []
    for name in names:
        model, size = name, 48
        if name.startswith("long-"):
            model, size = long_context_model(tmp / name, name[5:]), 336
        r = {"model": name, "k": args.k}
        r.update(bench_model(model, args.k, args.rounds, args.new_tokens, size, args.temperature, args.top_p))
        rows.append(r)
        print(
            f"{name:16s} img_tokens={r['image_tokens']:4d}  greedy {r['greedy_s']:.3f}s  "
            f"batched K={args.k} {r['batched_s']:.3f}s  sequential K={args.k} {r['sequential_s']:.3f}s  "
            f"batched/greedy {r['batched/greedy']:.2f}x  continued/greedy {r['continued/greedy']:.2f}x  "
            f"sequential/greedy {r['sequential/greedy']:.2f}x",
            flush=True,
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
