"""POPE: the published JSON-lines files and the HuggingFace parquet export.

``pope:coco_pope_random.json@COCO_VAL2014_DIR`` reads POPE's own files, one JSON object per
line: ``question_id`` (int), ``image`` (file name inside the image folder), ``text`` (the
question), ``label`` ("yes" / "no"). The split (random / popular / adversarial) comes from
the file name. Item ids are the question ids.

``pope:FILE.parquet`` (or a folder of ``*.parquet`` shards) reads the HuggingFace export
(columns ``question_id``, ``question``, ``answer``, ``image`` = {bytes, path},
``category`` = the split). The embedded images are written once each (named by content
hash) to ``RUN_DIR/data/images/pope/``. Item ids are ``CATEGORY-QUESTION_ID``, since the
question ids repeat across categories. ``#SPLIT`` keeps one category.

Scored by ``vrp.data.scoring.pope_label`` (task ``pope``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vrp.data.benchmarks._common import (
    IMAGE_EXTS,
    BenchSpec,
    Collector,
    id_of,
    iter_jsonl,
    peek_id,
    text_of,
)
from vrp.data.errors import DataSpecError
from vrp.data.items import Item
from vrp.fileio import atomic_write_bytes

SPLITS = ("random", "popular", "adversarial")
PARQUET_COLUMNS = ("question_id", "question", "answer", "image", "category")


def split_of(path: Path) -> str:
    """The POPE split named by a file name (``coco_pope_adversarial.json`` -> adversarial)."""
    stem = path.stem.lower()
    return next((s for s in SPLITS if stem.endswith(s)), stem)


def _label(rec: object, key: str) -> str:
    label = text_of(rec, key)
    if label not in ("yes", "no"):
        raise ValueError(f"field {key!r} must be 'yes' or 'no', got {label!r}")
    return label


def load_pope(spec: BenchSpec, run_dir: Path) -> Collector:
    """Load POPE from its JSON-lines file or its parquet export (see the module docstring)."""
    path = spec.files[0]
    if path.is_dir() or path.suffix == ".parquet":
        return _load_parquet(spec, run_dir)
    c = Collector()
    split = split_of(path)
    if not spec.wants(split):
        return c
    images = spec.images(path.parent)
    for src, rec in iter_jsonl(path):

        def build(rec: object = rec, src: str = src) -> Item:
            if isinstance(rec, ValueError):
                raise rec
            qid = id_of(rec, "question_id")
            return Item(
                id=qid,
                image=images.resolve(text_of(rec, "image")),
                question=text_of(rec, "text"),
                answers=(_label(rec, "label"),),
                task="pope",
                meta={"split": split, "question_id": rec["question_id"], "source": src},
            )

        c.consume(src, build, peek_id(rec, "question_id"))
    return c


def _image_bytes(value: object) -> tuple[bytes, str]:
    """(bytes, file suffix) of a parquet image cell: a {bytes, path} struct or raw bytes."""
    name = ""
    if isinstance(value, dict):
        name = value.get("path") or ""
        value = value.get("bytes")
    if not isinstance(value, bytes) or not value:
        raise ValueError("field 'image' holds no image bytes")
    suffix = Path(name).suffix.lower() if isinstance(name, str) else ""
    return value, suffix if suffix in IMAGE_EXTS else ".img"


def _write_image(folder: Path, data: bytes, suffix: str) -> str:
    """Write image bytes once, named by their hash (atomic: temp file, then rename)."""
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    if not (path.is_file() and path.stat().st_size == len(data)):
        atomic_write_bytes(path, data)
    return str(path)


def _load_parquet(spec: BenchSpec, run_dir: Path) -> Collector:
    import pyarrow.parquet as pq

    path = spec.files[0]
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataSpecError(f"{path} holds no *.parquet files")
    out = run_dir / "data" / "images" / "pope"
    out.mkdir(parents=True, exist_ok=True)
    c = Collector()
    for file in files:
        try:
            pf = pq.ParquetFile(file)
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise DataSpecError(f"{file} is not a parquet file: {e}") from None
        missing = [k for k in PARQUET_COLUMNS if k not in pf.schema_arrow.names]
        if missing:
            raise DataSpecError(f"{file} is not the POPE parquet export: missing columns {missing}")
        row = 0
        for batch in pf.iter_batches(batch_size=64, columns=list(PARQUET_COLUMNS)):
            for rec in batch.to_pylist():
                src = f"{file}:row[{row}]"
                row += 1

                def build(rec: dict = rec, src: str = src) -> Item | None:
                    category = text_of(rec, "category")
                    if not spec.wants(category):
                        return None
                    qid = id_of(rec, "question_id")
                    question, answer = text_of(rec, "question"), _label(rec, "answer")
                    data, suffix = _image_bytes(rec.get("image"))
                    return Item(
                        id=f"{category}-{qid}",
                        image=_write_image(out, data, suffix),
                        question=question,
                        answers=(answer,),
                        task="pope",
                        meta={"split": category, "question_id": rec["question_id"], "source": src},
                    )

                c.consume(src, build, peek_id(rec, "question_id"))
    return c
