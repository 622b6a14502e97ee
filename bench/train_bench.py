"""Seconds per training step of each toy recipe, and the projected time of its full schedule.

Runs the real training loop (`vrp.toys.train.train`) for the first ``--steps`` steps of
each architecture's recipe schedule and times it through the loop's own callbacks: each
evaluation's cost is the time from the step before it to its report, and the rate per step
is taken between the first and the last evaluation with the evaluations in between
subtracted, so model building, the held-out set and the first steps' warm-up are left out.
The projection is rate x the recipe's steps (``STEPS`` in ``vrp/toys/recipes.py``) plus one
evaluation per ``eval_every`` steps at the measured cost. Absolute times on a shared machine
vary with its load (and CPU steal): read them with ``uptime``.

    python bench/train_bench.py --steps 500 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="llava,paligemma,qwen2vl")
    ap.add_argument(
        "--steps",
        type=int,
        default=500,
        help="short schedule per architecture (at least two evaluations: > eval_every)",
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from vrp.toys.recipes import STEPS, recipe_for
    from vrp.toys.train import train

    print(f"threads={args.threads}, short schedule {args.steps} steps")
    print("| model | s / step | s / evaluation | recipe steps | projected minutes |")
    print("|---|---|---|---|---|")
    for arch in args.archs.split(","):
        cfg, wcfg = recipe_for(arch, threads=args.threads, steps=args.steps)
        stamps: list[tuple[int, float]] = []
        eval_cost: list[float] = []
        last = [time.perf_counter()]

        def on_step(step: int, last=last) -> None:
            last[0] = time.perf_counter()

        def on_eval(rec: dict, last=last, stamps=stamps, eval_cost=eval_cost) -> None:  # right after an evaluation
            now = time.perf_counter()
            eval_cost.append(now - last[0])
            stamps.append((rec["step"], now))

        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, tmp, wcfg, progress=on_eval, on_step=on_step)
        (s0, t0), (s1, t1) = stamps[0], stamps[-1]
        per_eval = sum(eval_cost) / len(eval_cost)
        rate = (t1 - t0 - per_eval * (len(stamps) - 1)) / (s1 - s0)
        n = STEPS[arch]
        minutes = (rate * n + per_eval * (n // cfg.eval_every)) / 60
        print(f"| toy-{arch} | {rate:.3f} | {per_eval:.1f} | {n} | {minutes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
