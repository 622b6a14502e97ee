"""Print the tables of per-item signals from ``vrp.signals.catalog`` (the ones in docs/signals.md):
the columns of ``items.parquet``, and the derived signals written after the run.

python scripts/signal_table.py           # print the markdown table
python scripts/signal_table.py --write   # replace the table between the markers in docs/signals.md
"""

from __future__ import annotations

import sys

from readme_block import ROOT, print_or_replace

from vrp.signals.catalog import DERIVED, SIGNALS

TARGET = ROOT / "docs" / "signals.md"


DIRECTION = {"higher": "higher", "lower": "lower", "none": "no claim"}


def table() -> str:
    lines = ["| column | family | unit | more reliable when | needs | what |", "|---|---|---|---|---|---|"]
    for s in SIGNALS:
        lines.append(f"| `{s.name}` | {s.family} | {s.unit} | {DIRECTION[s.direction]} | {s.needs} | {s.doc} |")
    return "\n".join(lines)


def derived_table() -> str:
    lines = ["| signal | family | unit | more reliable when | needs | written to (by) | what |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for d in DERIVED:
        lines.append(f"| `{d.name}` | {d.family} | {d.unit} | {DIRECTION[d.direction]} | {d.needs} | "
                     f"`{d.source}` ({d.made_by}) | {d.doc} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    print_or_replace("signal-table", table(), sys.argv, TARGET)
    print_or_replace("derived-table", derived_table(), sys.argv, TARGET)


if __name__ == "__main__":
    main()
