"""Replace a generated block of README.md, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replace_block(name: str, body: str, readme: Path = ROOT / "README.md") -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    a, b = text.index(begin) + len(begin), text.index(end)
    readme.write_text(text[:a] + "\n" + body + "\n" + text[b:])


def print_or_replace(name: str, body: str, argv: list[str]) -> None:
    """The scripts' command line: print ``body``; with ``--readme`` also put it into README.md."""
    if "--readme" in argv:
        replace_block(name, body)
    print(body)
