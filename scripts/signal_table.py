"""Print the table of per-item signals from ``vrp.signals.catalog`` (the one in docs/signals.md).

python scripts/signal_table.py           # print the markdown table
python scripts/signal_table.py --write   # replace the table between the markers in docs/signals.md
"""

from __future__ import annotations

import sys

from readme_block import ROOT, print_or_replace

from vrp.signals.catalog import SIGNALS

TARGET = ROOT / "docs" / "signals.md"


def table() -> str:
    lines = ["| column | family | unit | more reliable when | needs | what |", "|---|---|---|---|---|---|"]
    for s in SIGNALS:
        direction = {"higher": "higher", "lower": "lower", "none": "no claim"}[s.direction]
        lines.append(f"| `{s.name}` | {s.family} | {s.unit} | {direction} | {s.needs} | {s.doc} |")
    return "\n".join(lines)


def main() -> None:
    print_or_replace("signal-table", table(), sys.argv, TARGET)


if __name__ == "__main__":
    main()
