"""Print the toy-model accuracy table (the one in docs/toys.md) from the shipped checkpoints' eval.json files.

python scripts/toy_table.py           # print the markdown table
python scripts/toy_table.py --write   # replace the table between the markers in docs/toys.md
"""

from __future__ import annotations

import json
import sys

from readme_block import ROOT, print_or_replace

CKPT = ROOT / "src" / "vrp" / "toys" / "checkpoints"
TARGET = ROOT / "docs" / "toys.md"
TASKS = ("existence", "counting", "spatial", "attribute")


def table() -> str:
    lines = [
        "| model | " + " | ".join(TASKS) + " | all | training step kept |",
        "|---|" + "---|" * (len(TASKS) + 2),
    ]
    for d in sorted(CKPT.glob("toy-*")):
        ev = json.loads((d / "eval.json").read_text())
        step = json.loads((d / "training_log.json").read_text())["chosen"]["step"]
        acc = ev["accuracy"]

        def cell(a: dict) -> str:
            lo, hi = a["ci95"]
            return f"{a['accuracy']:.3f} [{lo:.2f}, {hi:.2f}] (n={a['n']})"

        cells = [cell(acc["by_task"][t]) for t in TASKS] + [cell(acc["overall"])]
        lines.append(f"| `{d.name}` | " + " | ".join(cells) + f" | {step} |")
    return (
        "\n".join(lines)
        + "\n\nAccuracy [95% Wilson interval] (n items), greedy answers on the held-out evaluation set."
    )


def main() -> None:
    print_or_replace("toy-table", table(), sys.argv, TARGET)


if __name__ == "__main__":
    main()
