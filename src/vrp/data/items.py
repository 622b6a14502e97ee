"""The item schema and the generic JSONL item format.

Generic format (what ``vrp world generate`` writes): one JSON object per line with

    id        str, unique within the file
    image     str, path of the image file relative to the JSONL file's folder
    question  str
    answers   list[str], one or more gold answers (non-empty)
    task      str, e.g. existence | counting | spatial | attribute | vqa | ...
    regions   list[{"label": str, "box": [x0, y0, x1, y1]}], optional; pixel boxes of the
              queried object(s) in the image's own coordinates, x1/y1 exclusive
    meta      dict, optional; anything else (e.g. the POPE negative strategy)

Malformed records are reported with file and line and skipped; the other records load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One benchmark item. ``image`` is an absolute path (resolved at load time)."""

    id: str
    image: str
    question: str
    answers: tuple[str, ...]
    task: str
    regions: tuple[dict, ...] = ()
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LoadFailure:
    """A record that could not be turned into an item."""

    id: str | None
    source: str  # "path:line"
    error: str


@dataclass
class LoadResult:
    items: list[Item]
    failures: list[LoadFailure]


_REQUIRED = {"id": str, "image": str, "question": str, "answers": list, "task": str}


def validate_regions(regions: object) -> tuple[dict, ...]:
    """Gold regions as items hold them: a list of ``{"label", "box": [x0, y0, x1, y1]}`` with
    finite pixel coordinates, x1 > x0 and y1 > y0; ValueError naming what is wrong."""
    if not isinstance(regions, list):
        raise ValueError("'regions' must be a list")
    out = []
    for r in regions:
        if not isinstance(r, dict) or "box" not in r:
            raise ValueError("each region must be an object with a 'box'")
        box = r["box"]
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        ):
            raise ValueError(f"region box must be 4 numbers, got {box!r}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"region box must have x1 > x0 and y1 > y0, got {box!r}")
        out.append({"label": str(r.get("label", "")), "box": [float(v) for v in box]})
    return tuple(out)


def resolve_image(root: Path, rel: str) -> Path:
    """Resolve an image path inside ``root``; refuse paths that escape it."""
    root = root.resolve()
    p = (root / rel).resolve()
    if root not in p.parents:
        raise ValueError(f"image path {rel!r} escapes the dataset folder {root} or names the folder itself")
    return p


def parse_record(rec: object, root: Path) -> Item:
    """Validate one generic record; raises ValueError with the reason."""
    if not isinstance(rec, dict):
        raise ValueError(f"record must be a JSON object, got {type(rec).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in rec:
            raise ValueError(f"missing field {key!r}")
        if not isinstance(rec[key], typ):
            raise ValueError(f"field {key!r} must be {typ.__name__}, got {type(rec[key]).__name__}")
    answers = rec["answers"]
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("'answers' must be a non-empty list of non-empty strings")
    meta = rec.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    return Item(
        id=rec["id"],
        image=str(resolve_image(root, rec["image"])),
        question=rec["question"],
        answers=tuple(answers),
        task=rec["task"],
        regions=validate_regions(rec.get("regions", [])),
        meta=meta,
    )


def load_generic_jsonl(path: str | Path) -> LoadResult:
    """Load a generic JSONL file; bad lines become failures, the rest load."""
    path = Path(path)
    root = path.parent
    items: list[Item] = []
    failures: list[LoadFailure] = []
    seen: set[str] = set()
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            src = f"{path}:{lineno}"
            rec_id = None
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"line is not valid UTF-8: {e}") from None
                rec = json.loads(line)
                rec_id = rec.get("id") if isinstance(rec, dict) else None
                item = parse_record(rec, root)
                if item.id in seen:
                    raise ValueError(f"duplicate id {item.id!r}")
                seen.add(item.id)
                items.append(item)
            except (json.JSONDecodeError, ValueError) as e:
                failures.append(LoadFailure(id=rec_id if isinstance(rec_id, str) else None, source=src, error=str(e)))
    return LoadResult(items=items, failures=failures)


def item_to_record(item: Item, root: Path) -> dict:
    """Inverse of :func:`parse_record` (image written relative to ``root``)."""
    return {
        "id": item.id,
        "image": str(Path(item.image).resolve().relative_to(root.resolve())),
        "question": item.question,
        "answers": list(item.answers),
        "task": item.task,
        "regions": [dict(r) for r in item.regions],
        "meta": item.meta,
    }
