"""Every ```python block of the README and of the docs pages runs as written: the blocks of a
page in order, in one namespace, in a fresh working directory, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_the_pages_hold_examples():
    with_code = [p.name for p in PAGES if python_blocks(p)]
    assert "README.md" in with_code and "python-api.md" in with_code


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for i, code in enumerate(python_blocks(page)):
        try:
            exec(compile(code, f"{page.name}[python block {i + 1}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.name}, python block {i + 1} fails: {type(e).__name__}: {e}\n{code}") from e
