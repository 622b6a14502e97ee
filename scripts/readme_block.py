"""Replace a generated block of README.md, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replace_block(name: str, body: str, readme: Path = ROOT / "README.md") -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    a, b = text.index(begin) + len(begin), text.index(end)
    readme.write_text(text[:a] + "\n" + body + "\n" + text[b:])
