"""Counting and spatial suites: ``{image_id, question, answer}`` records with an image folder.

``counting:FILE[@IMAGE_DIR]`` and ``spatial:FILE[@IMAGE_DIR]``. FILE is a JSON list of
records or a JSON-lines file. Each record has ``image_id`` (str or int), ``question``
(str) and ``answer`` (str, or int for counting); ``question_id`` or ``id`` is used as the
item id when present, else the record's 0-based position. The image is ``image_id``
itself when it ends in an image extension, else the first of ``<image_id>.jpg``,
``.jpeg``, ``.png`` that exists in IMAGE_DIR (default: the file's folder).

Task ``counting`` is scored on the first integer of the answer (the gold answer must hold
one); task ``spatial`` by canonical exact match.
"""

from __future__ import annotations

from pathlib import Path

from vrp.data.benchmarks._common import (
    IMAGE_EXTS,
    BenchSpec,
    Collector,
    field_of,
    id_of,
    iter_records,
    peek_id,
    text_of,
)
from vrp.data.items import Item
from vrp.data.scoring import extract_int


def image_names(image_id: str) -> tuple[str, ...]:
    """Candidate file names of an image id, in the order they are tried."""
    if Path(image_id).suffix.lower() in IMAGE_EXTS:
        return (image_id,)
    return tuple(f"{image_id}{ext}" for ext in (".jpg", ".jpeg", ".png"))


def load_suite(spec: BenchSpec, task: str) -> Collector:
    """Load a counting or spatial suite file as items of ``task``."""
    path = spec.files[0]
    images = spec.images(path.parent)
    c = Collector()
    for index, (src, rec) in enumerate(iter_records(path)):

        def build(rec: object = rec, src: str = src, index: int = index) -> Item:
            if isinstance(rec, ValueError):
                raise rec
            key = next((k for k in ("question_id", "id") if isinstance(rec, dict) and k in rec), None)
            item_id = id_of(rec, key) if key else str(index)
            image_id = str(field_of(rec, "image_id", str, int))
            question = text_of(rec, "question")
            answer = str(field_of(rec, "answer", str, int) if task == "counting" else text_of(rec, "answer"))
            if task == "counting" and extract_int(answer) is None:
                raise ValueError(f"counting answer {answer!r} holds no integer")
            return Item(
                id=item_id,
                image=images.resolve(*image_names(image_id)),
                question=question,
                answers=(answer,),
                task=task,
                meta={"image_id": rec["image_id"], "source": src},
            )

        raw_id = next((peek_id(rec, k) for k in ("question_id", "id") if peek_id(rec, k) is not None), index)
        c.consume(src, build, raw_id)
    return c


def load_counting(spec: BenchSpec, run_dir: Path) -> Collector:
    """A counting suite (task ``counting``)."""
    return load_suite(spec, "counting")


def load_spatial(spec: BenchSpec, run_dir: Path) -> Collector:
    """A spatial suite (task ``spatial``)."""
    return load_suite(spec, "spatial")
