"""Replace a generated block of a markdown page, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

The table scripts (``signal_table.py``, ``toy_table.py``, ``intervention_tables.py``) print their
table and, with ``--write``, put it into their page under ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def block(name: str, text: str) -> str:
    """The body of block ``name`` in ``text`` (without the newlines next to the markers)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no {begin} ... {end} block")
    return text[text.index(begin) + len(begin) : text.index(end)].strip("\n")


def replace_block(name: str, body: str, target: Path) -> None:
    """Put ``body`` between the markers of block ``name`` in the file ``target``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = target.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{target} has no {begin} ... {end} block")
    a, b = text.index(begin) + len(begin), text.index(end)
    target.write_text(text[:a] + "\n" + body + "\n" + text[b:])


def print_or_replace(name: str, body: str, argv: list[str], target: Path) -> None:
    """The scripts' command line: print ``body``; with ``--write`` also put it into ``target``."""
    if "--write" in argv:
        replace_block(name, body, target)
    print(body)
