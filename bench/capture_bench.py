"""Cost of the instrumented pass vs plain greedy generate vs the eager reference.

For each model, three ways of answering the same batch of items, measured side by side in
one run (this machine is shared and noisy, so only ratios are meaningful):

    plain    model.generate, SDPA, no capture
    vrp      vrp.capture.capture_generate (SDPA + last-row attention + residual taps)
    eager    eager attention with output_attentions=True during generate (the reference
             approach of the papers' code)

Each (model, method) runs in its own subprocess so peak RSS is per method. Models: the three
shipped toys (16 image tokens) and tiny random "long context" models with >= 576 image
tokens (LLaVA-1.5 geometry: 336 px, patch 14). Prints a table of time and peak-memory ratios.

    python bench/capture_bench.py [--items 16] [--repeats 3] [--new-tokens 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, resource, sys, time, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(int(sys.argv[5]))
from vrp.models import load_adapter
from vrp.capture.engine import CaptureConfig, capture_generate
from vrp.world.dataset import generate
from vrp.world.scene import WorldConfig, render

model, method, n_items, repeats, _, new_tokens, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
ad = load_adapter(model)
data, _ = generate(n_items, seed=5)
images = [render(d.scene, WorldConfig()).resize((size, size)) for d in data]
prompts = [ad.prompt(d.questions[0].question) for d in data]
tok = ad.tokenizer

def plain():
    enc = ad.encode(images, prompts)
    with torch.no_grad():
        ad.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)

def vrp():
    capture_generate(ad, images, prompts, CaptureConfig(max_new_tokens=new_tokens))

def eager():
    enc = ad.encode(images, prompts)
    with torch.no_grad():
        ad.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                          output_attentions=True, return_dict_in_generate=True)

fn = {"plain": plain, "vrp": vrp, "eager": eager}[method]
if method == "eager":
    ad.model.set_attn_implementation({"text_config": "eager"})
fn()  # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats):
    t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n_img = int((ad.encode(images[:1], prompts[:1])["input_ids"] == ad.image_token_id).sum())
print(json.dumps({"time": min(times), "peak_kb": peak, "base_kb": base, "image_tokens": n_img}))
"""


def long_context_model(out: Path, arch: str) -> str:
    """A tiny random model with LLaVA-1.5 image geometry (336 px / patch 14 -> 576 tokens)."""
    from vrp.world.toy import build_toy

    model, processor = build_toy(arch, seed=0, image_size=336, patch=14)
    if arch == "qwen2vl":  # let 336 x 336 through unresized: 24 x 24 merged tokens
        processor.image_processor.size = {"shortest_edge": 14 * 14, "longest_edge": 336 * 336}
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="toy-llava,toy-paligemma,toy-qwen2vl,long-llava,long-paligemma,long-qwen2vl")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vrp-bench-"))
    rows = []
    for name in args.models.split(","):
        size = 48
        model = name
        if name.startswith("long-"):
            model = long_context_model(tmp / name, name[5:])
            size = 336
        res = {}
        for method in ("plain", "vrp", "eager"):
            cmd = [
                sys.executable,
                "-c",
                WORKER,
                model,
                method,
                str(args.items),
                str(args.repeats),
                str(args.threads),
                str(args.new_tokens),
                str(size),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{name}/{method} failed:\n{proc.stderr[-3000:]}")
            res[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        p, v, e = res["plain"], res["vrp"], res["eager"]
        rows.append(
            {
                "model": name,
                "image_tokens": p["image_tokens"],
                "plain_s": p["time"],
                "vrp_s": v["time"],
                "eager_s": e["time"],
                "vrp/plain": v["time"] / p["time"],
                "vrp/eager": v["time"] / e["time"],
                "peak_mb_plain": p["peak_kb"] / 1024,
                "peak_mb_vrp": v["peak_kb"] / 1024,
                "peak_mb_eager": e["peak_kb"] / 1024,
            }
        )
        r = rows[-1]
        print(
            f"{name:16s} img_tokens={r['image_tokens']:4d}  plain {r['plain_s']:.3f}s  vrp {r['vrp_s']:.3f}s  "
            f"eager {r['eager_s']:.3f}s  vrp/plain {r['vrp/plain']:.2f}x  vrp/eager {r['vrp/eager']:.2f}x  "
            f"peak MB plain/vrp/eager {r['peak_mb_plain']:.0f}/{r['peak_mb_vrp']:.0f}/{r['peak_mb_eager']:.0f}",
            flush=True,
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
