"""Shared pieces of the benchmark loaders: spec parsing, record checks, image folders.

A benchmark spec (what follows ``FORMAT:`` in ``--data``) is::

    FILE[+FILE2][@IMAGE_DIR][#SPLIT]

``+`` joins the second file of two-file formats (questions + annotations), ``@`` names the
image folder (default: the first file's folder), ``#`` keeps one split. Paths may not
contain ``@``, ``#`` or ``+`` unless the whole spec is one existing path.

Failure sources name the file and the record: ``path:LINE`` (1-based) for line-based
files, ``path:KEY[INDEX]`` or ``path:[INDEX]`` (0-based, a JSON path) for JSON documents,
``path:row[INDEX]`` (0-based) for parquet tables.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vrp.data.errors import DataSpecError
from vrp.data.items import Item, LoadFailure, LoadResult, resolve_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_SPLIT = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class BenchSpec:
    """A parsed benchmark spec: input files, image folder, and the split to keep (if any)."""

    files: tuple[Path, ...]
    image_dir: Path | None = None
    split: str | None = None

    def wants(self, split: str) -> bool:
        """Whether items of ``split`` are kept."""
        return self.split is None or self.split == split

    def images(self, default: Path) -> ImageFolder:
        """The image folder: ``@IMAGE_DIR`` if given, else ``default``."""
        return ImageFolder(self.image_dir if self.image_dir is not None else default)


def parse_spec(rest: str) -> BenchSpec:
    """Parse ``FILE[+FILE2][@IMAGE_DIR][#SPLIT]`` (see the module docstring)."""
    if not rest:
        raise DataSpecError("the benchmark spec names no file")
    if Path(rest).exists():
        return BenchSpec((Path(rest),))
    split = None
    body, sep, tail = rest.rpartition("#")
    if sep and body and _SPLIT.fullmatch(tail):
        rest, split = body, tail
    image_dir = None
    body, sep, tail = rest.rpartition("@")
    if sep and body:
        rest, image_dir = body, Path(tail)
    files = (Path(rest),) if Path(rest).exists() else tuple(Path(p) for p in rest.split("+"))
    return BenchSpec(files, image_dir, split)


class ImageFolder:
    """Resolves image names inside a folder (refusing escapes) and checks they exist."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._exists: dict[Path, bool] = {}

    def _is_file(self, p: Path) -> bool:
        if p not in self._exists:
            self._exists[p] = p.is_file()
        return self._exists[p]

    def resolve(self, *names: str) -> str:
        """Absolute path of the first of ``names`` that exists; ValueError if none does."""
        tried = []
        for name in names:
            p = resolve_image(self.root, name)
            if self._is_file(p):
                return str(p)
            tried.append(str(p))
        raise ValueError(f"image file not found: {' or '.join(tried)}")


@dataclass
class Collector:
    """Accumulates items and failures; a repeated item id is a failure (the first one is kept)."""

    items: list[Item] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)

    def fail(self, source: str, error: str, rec_id: object = None) -> None:
        """Record a failure at ``source``."""
        rid = str(rec_id) if isinstance(rec_id, str | int) and not isinstance(rec_id, bool) else None
        self.failures.append(LoadFailure(id=rid, source=source, error=error))

    def consume(self, source: str, build: Callable[[], Item | None], rec_id: object = None) -> None:
        """Run ``build``; keep its item, or record its ValueError as a failure at ``source``.

        ``build`` returns None for a record that is deliberately not loaded (it counts it
        in ``skipped`` itself).
        """
        try:
            item = build()
            if item is None:
                return
            if item.id in self._seen:
                raise ValueError(f"duplicate id {item.id!r}")
        except ValueError as e:
            self.fail(source, str(e), rec_id)
            return
        self._seen.add(item.id)
        self.items.append(item)

    def result(self) -> LoadResult:
        return LoadResult(items=self.items, failures=self.failures)


def field_of(rec: object, key: str, *types: type) -> object:
    """``rec[key]`` checked to be one of ``types`` (bool is never an int); ValueError otherwise."""
    if not isinstance(rec, dict):
        raise ValueError(f"record must be a JSON object, got {type(rec).__name__}")
    if key not in rec or rec[key] is None:
        raise ValueError(f"missing field {key!r}")
    v = rec[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"field {key!r} must be {names}, got {type(v).__name__}")
    if isinstance(v, str) and not v.strip():
        raise ValueError(f"field {key!r} is empty")
    return v


def text_of(rec: object, key: str) -> str:
    """A non-empty string field."""
    return field_of(rec, key, str)  # type: ignore[return-value]


def id_of(rec: object, key: str) -> str:
    """An id field (int or non-empty string) as a string."""
    return str(field_of(rec, key, int, str))


def peek_id(rec: object, key: str) -> object:
    """The raw id of a record for failure reports (None when there is none)."""
    return rec.get(key) if isinstance(rec, dict) else None


def read_json(path: Path, fmt: str) -> object:
    """Parse a whole JSON document; a file that is not JSON is a DataSpecError."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataSpecError(f"{path} is not a JSON document as the {fmt} format needs: {e}") from None


def list_field(doc: object, key: str, path: Path, fmt: str) -> list:
    """``doc[key]`` of a JSON document that must be an object holding a list there."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise DataSpecError(f"{path} is not a {fmt} file: expected a JSON object with a {key!r} list")
    return doc[key]


def top_list(doc: object, path: Path, fmt: str) -> list:
    """A JSON document that must be a list of records."""
    if not isinstance(doc, list):
        raise DataSpecError(f"{path} is not a {fmt} file: expected a JSON list of records")
    return doc


def iter_jsonl(path: Path) -> Iterator[tuple[str, object]]:
    """(``path:LINE``, record) per non-blank line; a line that is not JSON yields a ValueError."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield f"{path}:{lineno}", ValueError(f"line is not valid JSON: {e}")


def iter_records(path: Path) -> Iterator[tuple[str, object]]:
    """Records of a JSON list file (``path:[i]``) or a JSON-lines file (``path:LINE``)."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        for i, rec in enumerate(top_list(read_json(path, "JSON list"), path, "JSON list")):
            yield f"{path}:[{i}]", rec
    else:
        yield from iter_jsonl(path)
