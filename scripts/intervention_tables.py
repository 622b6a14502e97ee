"""The paper's Table 4/5-style experiments on the three shipped toy models.

For each toy: `vrp run` on ShapesWorld, `vrp probe`, then `vrp intervene` with the sparse
probe's top units vs random units at every layer, random mass ablation at the peak layer,
MLP bypass at every layer, and top-30% patch masking vs random patches. Prints markdown
tables of the paired accuracy deltas (pp, 95% paired-bootstrap CI) overall and on existence
(object identification); with --write also puts them into docs/interventions.md.

    python scripts/intervention_tables.py --out runs/interventions [--images 150] [--write]
    python scripts/intervention_tables.py --out runs/interventions --arch llava   # one model's runs only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_block import ROOT, print_or_replace

EXPERIMENTS = [
    ("neurons", ["--k", "16"]),
    ("mass", []),
    ("mlp", []),
    ("patches", []),
]


def vrp(*args: str) -> None:
    subprocess.run(["vrp", *args], check=True, stdout=subprocess.DEVNULL)


ARCHS = ("llava", "paligemma", "qwen2vl")
TARGET = ROOT / "docs" / "interventions.md"


def run_all(out: Path, images: int, n_boot: int, archs=ARCHS) -> None:
    for arch in archs:
        run = out / arch
        if not (run / "probes" / "summary.json").is_file():
            vrp("run", "--model", f"toy-{arch}", "--data", f"shapesworld:{images}", "--out", str(run),
                "--samples", "0", "--seed", "11", "--answer-only")  # fmt: skip
            vrp("probe", "--run", str(run))
        for kind, extra in EXPERIMENTS:
            vrp("intervene", "--run", str(run), "--kind", kind, "--n-boot", str(n_boot), *extra)


def _cell(r) -> str:
    return f"{r.delta_pp:+.1f} [{r.delta_ci_low:+.1f}, {r.delta_ci_high:+.1f}]"


def tables(out: Path) -> str:
    lines = [
        "| model | experiment | condition | n | acc clean | delta all (pp) [95% CI] | delta existence (pp) [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in ARCHS:
        df = pq.read_table(out / arch / "interventions" / "effects.parquet").to_pandas()
        for (exp, cond), g in df.groupby(["experiment", "condition"], sort=False):
            a = g[g.task == "all"].iloc[0]
            e = g[g.task == "existence"].iloc[0]
            label = cond + (" (control)" if a.control else "")
            lines.append(f"| `toy-{arch}` | {exp} | {label} | {a.n} | {a.acc_clean:.3f} | {_cell(a)} | {_cell(e)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/interventions"))
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--tables-only", action="store_true", help="only format existing results")
    ap.add_argument("--write", action="store_true", help="also put the table into docs/interventions.md")
    ap.add_argument("--arch", action="append", choices=ARCHS, help="run only these (repeatable); tables need all")
    args = ap.parse_args()
    if not args.tables_only:
        run_all(args.out, args.images, args.n_boot, args.arch or ARCHS)
        if args.arch and set(args.arch) != set(ARCHS):
            return
    print_or_replace("intervention-table", tables(args.out), sys.argv, TARGET)


if __name__ == "__main__":
    main()
