"""Cost of the vectorized AUROC bootstrap CI and permutation p-value (vrp.stats.auroc_ci).

Synthetic signal (positives ~ N(1, 1), negatives ~ N(0, 1), 60% positives, scores rounded to
3 decimals so that ties occur) with ``--n`` items. Timed, in rounds that run every method in
turn (this machine is shared and noisy, so methods are interleaved and medians are reported,
wall clock and CPU time of this process):

    boot stratified   auroc_ci(n_boot=10_000, n_perm=0)                 (the default bootstrap)
    boot 2 threads    the same with n_jobs=2 (identical result)
    boot plain        auroc_ci(n_boot=10_000, n_perm=0, stratified=False)
    perm              auroc_ci(n_boot=0, n_perm=10_000)
    both              auroc_ci()                                        (defaults: both)
    both 2 threads    auroc_ci(n_jobs=2)
    naive             sklearn.metrics.roc_auc_score on resampled indices in a Python loop;
                      ``--naive`` resamples per round (default 300), extrapolated linearly to
                      ``--n-boot`` (the loop is a fixed cost per resample)

    python bench/stats_bench.py [--n 5000] [--n-boot 10000] [--rounds 5] [--naive 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def naive_bootstrap(s: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])  # stratified, as vrp
        out[b] = roc_auc_score(y[idx], s[idx])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--naive", type=int, default=300, help="resamples of the naive loop per round (extrapolated)")
    args = ap.parse_args()

    from vrp.stats import auroc as auroc_mod

    rng = np.random.default_rng(0)
    y = rng.random(args.n) < 0.6
    s = np.round(rng.normal(size=args.n) + y, 3)
    nb = args.n_boot
    methods = {
        "boot stratified": lambda: auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=0),
        "boot 2 threads": lambda: auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=0, n_jobs=2),
        "boot plain": lambda: auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=0, stratified=False),
        "perm": lambda: auroc_mod.auroc_ci(s, y, n_boot=0, n_perm=nb),
        "both": lambda: auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=nb),
        "both 2 threads": lambda: auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=nb, n_jobs=2),
        "naive": lambda: naive_bootstrap(s, y, args.naive, 0),
    }
    for f in methods.values():  # warm-up
        f()
    wall: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, f in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    scale = {k: (nb / args.naive if k == "naive" else 1.0) for k in methods}
    print(f"n = {args.n} ({int(y.sum())} positive), {nb} resamples / permutations, median of {args.rounds} rounds")
    print(f"{'method':18s} {'wall s':>9s} {'cpu s':>9s}  (cpu: this process, all threads)")
    for name in methods:
        w, c = statistics.median(wall[name]) * scale[name], statistics.median(cpu[name]) * scale[name]
        note = f"  (extrapolated from {args.naive} resamples)" if name == "naive" else ""
        print(f"{name:18s} {w:9.3f} {c:9.3f}{note}")
    ratio = statistics.median(wall["naive"]) * scale["naive"] / statistics.median(wall["boot stratified"])
    print(f"naive / vectorized bootstrap (wall): {ratio:.0f}x")

    r = auroc_mod.auroc_ci(s, y, n_boot=nb, n_perm=nb)
    ref = naive_bootstrap(s, y, 2000, 1)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    print(
        f"check: vrp {r.auroc:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}] p={r.p_value:.2g}; naive 2000 resamples [{lo:.4f}, {hi:.4f}]"
    )


if __name__ == "__main__":
    main()
