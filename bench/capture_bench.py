"""Cost of the instrumented pass vs plain greedy generate vs the eager reference.

For each model, three ways of answering the same batch of items, measured side by side in
one run (this machine is shared and noisy, so only ratios are meaningful):

    plain    model.generate, SDPA, no capture
    vrp      vrp.capture.capture_generate (SDPA + last-row attention + residual taps)
    eager    eager attention with output_attentions=True during generate (the reference
             approach of the papers' code)

Times are medians of calls interleaved in one process (plain, vrp, eager in turn), so drift
of this shared machine hits all three alike; peak RSS comes from one subprocess per method. Models: the three
shipped toys (16 image tokens), tiny random "long context" models with >= 576 image tokens
(LLaVA-1.5 geometry: 336 px, patch 14), and two newer families at their real image geometry:
``long-llava_next`` (anyres: a 24 x 24 base view plus a stitched 2 x 2 tile grid, 2,000+ image
tokens per image) and ``long-qwen2_5_vl`` (patch 14, 2 x 2 merge, windowed vision tower; a
952 x 672 image gives 34 x 24 = 816 tokens). Prints a table of time and peak-memory ratios.

    python bench/capture_bench.py [--items 16] [--repeats 3] [--new-tokens 8] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _models import long_context_family, long_context_model

WORKER = r"""
import json, resource, sys, time, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(int(sys.argv[5]))
from vrp.models import load_adapter
from vrp.capture.engine import CaptureConfig, capture_generate
from vrp.world.dataset import generate
from vrp.world.scene import WorldConfig, render

model, method, n_items, repeats, _, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
size = tuple(int(v) for v in sys.argv[7].split("x"))  # width x height
ad = load_adapter(model)
data, _ = generate(n_items, seed=5)
images = [render(d.scene, WorldConfig()).resize(size) for d in data]
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

if method == "time":
    # Interleaved: plain, vrp, eager in turn, so drift of the machine hits all three alike.
    from vrp.models import load_adapter as _load
    eager_ad = _load(model)
    eager_ad.model.set_attn_implementation({"text_config": "eager"})
    def eager():
        enc = eager_ad.encode(images, prompts)
        with torch.no_grad():
            eager_ad.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                    output_attentions=True, return_dict_in_generate=True)
    fns = {"plain": plain, "vrp": vrp, "eager": eager}
    for f in fns.values():
        f()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
    from vrp.capture.engine import image_sizes
    grids = ad.image_grids(ad.encode(images[:1], prompts[:1]), image_sizes(images[:1]))[0]
    n_img = sum(len(g.patch_index) + len(g.separators) for g in grids)
    print(json.dumps({"median": {k: sorted(v)[len(v) // 2] for k, v in times.items()}, "image_tokens": n_img}))
    raise SystemExit(0)
fn = {"plain": plain, "vrp": vrp, "eager": eager}[method]
if method == "eager":
    ad.model.set_attn_implementation({"text_config": "eager"})
fn()  # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(2):
    fn()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_kb": peak, "base_kb": base}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--models",
        default="toy-llava,toy-paligemma,toy-qwen2vl,long-llava,long-paligemma,long-qwen2vl,long-llava_next,"
        "long-qwen2_5_vl",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vrp-bench-"))
    rows = []
    for name in args.models.split(","):
        size = "48x48"
        model = name
        if name in ("long-llava_next", "long-qwen2_5_vl"):
            model, (w, h) = long_context_family(tmp / name, name[5:])
            size = f"{w}x{h}"
        elif name.startswith("long-"):
            model = long_context_model(tmp / name, name[5:])
            size = "336x336"
        res = {}
        for method in ("time", "plain", "vrp", "eager"):
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
                size,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{name}/{method} failed:\n{proc.stderr[-3000:]}")
            res[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        t = res["time"]["median"]
        r = {
            "model": name,
            "image_tokens": res["time"]["image_tokens"],
            "plain_s": t["plain"],
            "vrp_s": t["vrp"],
            "eager_s": t["eager"],
            "vrp/plain": t["vrp"] / t["plain"],
            "vrp/eager": t["vrp"] / t["eager"],
            **{f"peak_mb_{m}": res[m]["peak_kb"] / 1024 for m in ("plain", "vrp", "eager")},
        }
        rows.append(r)
        print(
            f"{name:16s} img_tokens={r['image_tokens']:4d}  plain {r['plain_s']:.3f}s  vrp {r['vrp_s']:.3f}s  "
            f"eager {r['eager_s']:.3f}s  vrp/plain {r['vrp/plain']:.2f}x  vrp/eager {r['vrp/eager']:.2f}x  "
            f"peak MB plain/vrp/eager {r['peak_mb_plain']:.0f}/{r['peak_mb_vrp']:.0f}/{r['peak_mb_eager']:.0f}",
            flush=True,
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
