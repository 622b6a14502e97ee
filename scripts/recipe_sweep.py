"""Train several variants of a toy recipe side by side and log each one's held-out curve.

Each variant is the shipped recipe (``vrp.toys.recipes``) with some ``TrainConfig`` fields
overridden, trained on a schedule of its own over ``--steps`` (override ``schedule_steps``
to stop a longer schedule early instead); variants run in a pool of ``--jobs`` worker
processes (one torch thread each). Each appends to ``OUT/<arch>-<name>.jsonl`` as it goes,
every line tagged with its run name: a header with the overrides and the full resolved
configuration, one record per evaluation, and the step kept; so a sweep cut short still
leaves every curve so far, and the files can be concatenated into one JSONL log. A variant
that fails is reported and the others go on. Used to look for faster-learning recipes, on a
lent GPU (``--device cuda``; run CUDA MPS, ``nvidia-cuda-mps-control -d``, so that the
processes share the GPU instead of time-slicing it) or on CPU.

    python scripts/recipe_sweep.py --arch qwen2vl --steps 3000 --out runs/sweep \\
        --variants '{"base": {}, "lr4": {"lr": 0.004}}' --device cuda --jobs 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path


def _run(arch: str, name: str, overrides: dict, steps: int, out: str, device: str) -> str:
    from vrp.toys.recipes import recipe_for
    from vrp.toys.train import train

    cfg, wcfg = recipe_for(arch, steps=steps, threads=1)
    cfg = replace(cfg, schedule_steps=0)  # each variant's schedule spans --steps unless it overrides this
    for key in ("attn_sup_tasks", "band"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    cfg = replace(cfg, **overrides)
    run = f"{arch}-{name}"
    path = Path(out) / f"{run}.jsonl"

    def write(rec: dict, mode: str = "a") -> None:
        with path.open(mode) as f:
            f.write(json.dumps({"run": run, **rec}) + "\n")

    write({"overrides": overrides, "device": device, "config": asdict(cfg), "world": wcfg.to_dict()}, "w")
    t0 = time.time()
    log = train(
        cfg,
        Path(out) / run,
        wcfg,
        progress=lambda rec: write({**rec, "wall": round(time.time() - t0, 1)}),
        device=device,
    )
    write({"chosen": log["chosen"]})
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
    # a SIGTERM to this process exits through the pool's context manager, which terminates the
    # workers (otherwise they would train on as orphans)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        jobs = [
            pool.apply_async(_run, (args.arch, n, o, args.steps, args.out, args.device)) for n, o in variants.items()
        ]
        failed = 0
        for name, j in zip(variants, jobs, strict=True):
            try:
                print("done", j.get(), flush=True)
            except Exception as e:  # one bad variant (a typo in an override, say) must not stop the others
                failed += 1
                print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
