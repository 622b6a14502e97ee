"""The README is the front door and docs/ the house: the README stays short, every link in
them stays inside the repository and resolves, and the generated tables match their sources.

(Executing the ```python blocks of these pages is another test's job.)
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
PAGES = (
    "method.md",
    "data.md",
    "run-directory.md",
    "signals.md",
    "interventions.md",
    "monitor.md",
    "serve.md",
    "toys.md",
    "python-api.md",
    "study.md",
    "architecture.md",
)

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REF_DEF = re.compile(r"^[ ]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")


def doc_pages() -> list[Path]:
    """README.md and every markdown page under docs/ except the experiment logs."""
    pages = [ROOT / "README.md"]
    pages += sorted(p for p in DOCS.rglob("*.md") if "experiments" not in p.relative_to(DOCS).parts)
    return pages


def links(text: str) -> list[str]:
    """Targets of the markdown links of ``text`` (inline, reference definitions, autolinks),
    outside fenced code blocks and code spans."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(prose) + _REF_DEF.findall(prose) + _AUTOLINK.findall(prose)


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_link_parser_finds_what_it_should() -> None:
    text = (
        'See [a](docs/a.md#x), ![img](b.png "t"), [nested [x]](c.md) and <https://e.org>.\n'
        "[ref]: ../shared/SPEC.md\n"
        "`[not](a-link.md)`\n"
        "```python\nd[k](1)\n[no](code.md)\n```\n"
    )
    assert links(text) == ["docs/a.md#x", "b.png", "c.md", "../shared/SPEC.md", "https://e.org"]


def test_every_reference_page_exists() -> None:
    missing = [name for name in PAGES if not (DOCS / name).is_file()]
    assert not missing, f"docs pages missing: {missing}"


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES} and move reference to docs/"


@pytest.mark.parametrize("page", doc_pages(), ids=_rel)
def test_no_link_leaves_the_repository(page: Path) -> None:
    text = page.read_text()
    for bad in ("http://", "https://", "../shared"):
        assert bad not in text, f"{_rel(page)} mentions {bad!r}: no link may leave the repository"


@pytest.mark.parametrize("page", doc_pages(), ids=_rel)
def test_every_link_resolves_to_a_file_in_the_repository(page: Path) -> None:
    problems = []
    for target in links(page.read_text()):
        path = target.split("#", 1)[0]
        if not path:  # an anchor on the same page
            continue
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", path) or path.startswith("//"):
            problems.append(f"{target}: not a relative link")
            continue
        resolved = (page.parent / path).resolve()
        if ROOT not in resolved.parents:
            problems.append(f"{target}: outside the repository")
        elif not resolved.is_file():
            problems.append(f"{target}: no such file")
    assert not problems, f"{_rel(page)}: " + "; ".join(problems)


def _script(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


@pytest.mark.parametrize(
    ("script", "block", "page"),
    [("signal_table", "signal-table", "signals.md"), ("toy_table", "toy-table", "toys.md")],
)
def test_generated_table_matches_its_source(script: str, block: str, page: str) -> None:
    module = _script(script)
    assert DOCS / page == module.TARGET
    written = _script("readme_block").block(block, (DOCS / page).read_text())
    assert written == module.table(), f"docs/{page} is stale: run python scripts/{script}.py --write"


def test_derived_signal_table_matches_the_catalog() -> None:
    module = _script("signal_table")
    written = _script("readme_block").block("derived-table", (DOCS / "signals.md").read_text())
    assert written == module.derived_table(), "docs/signals.md is stale: run python scripts/signal_table.py --write"


def test_intervention_table_block_is_in_its_page() -> None:
    # regenerating it takes 12 minutes of experiments; check only that the script writes where the table is
    module = _script("intervention_tables")
    text = module.TARGET.read_text()
    body = _script("readme_block").block("intervention-table", text)
    assert body.startswith("| model | experiment | condition |") and "`toy-qwen2vl`" in body
