"""Train several variants of a toy recipe side by side and log each one's held-out curve.

Each variant is the shipped recipe (``vrp.world.recipes``) with some ``TrainConfig`` fields
overridden; every variant runs in its own process (one torch thread each) and appends each
evaluation record to ``OUT/<arch>-<name>.jsonl`` as it happens, so a sweep cut short
still leaves every curve so far. Used to look for faster-learning recipes, on a lent GPU
(``--device cuda``) or on CPU.

    python scripts/recipe_sweep.py --arch qwen2vl --steps 3000 --out runs/sweep \\
        --variants '{"base": {}, "lr4": {"lr": 0.004}}' --device cuda --jobs 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path


def _run(arch: str, name: str, overrides: dict, steps: int, out: str, device: str) -> str:
    from vrp.world.recipes import recipe_for
    from vrp.world.train import train

    cfg, wcfg = recipe_for(arch, steps=steps, threads=1)
    for key in ("attn_sup_tasks", "band"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    cfg = replace(cfg, **overrides)
    path = Path(out) / f"{arch}-{name}.jsonl"
    path.write_text(json.dumps({"config": overrides, "steps": steps, "device": device}) + "\n")
    t0 = time.time()

    def progress(rec: dict) -> None:
        with path.open("a") as f:
            f.write(json.dumps({**rec, "wall": round(time.time() - t0, 1)}) + "\n")

    log = train(cfg, Path(out) / f"{arch}-{name}", wcfg, progress=progress, device=device)
    with path.open("a") as f:
        f.write(json.dumps({"chosen": log["chosen"]}) + "\n")
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--variants", required=True, help="JSON object: name -> TrainConfig overrides")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    variants = json.loads(args.variants)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        jobs = [
            pool.apply_async(_run, (args.arch, n, o, args.steps, args.out, args.device)) for n, o in variants.items()
        ]
        for j in jobs:
            print("done", j.get(), flush=True)


if __name__ == "__main__":
    main()
