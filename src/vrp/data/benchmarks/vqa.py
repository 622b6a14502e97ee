"""VQAv2 (official question + annotation JSON) and TextVQA (``TextVQA_0.5.1_val.json`` style).

``vqav2:QUESTIONS.json+ANNOTATIONS.json[@IMAGE_DIR]``: the official files, e.g.
``v2_OpenEnded_mscoco_val2014_questions.json`` (``{"data_subtype": "val2014", "questions":
[{image_id, question, question_id}]}``) and ``v2_mscoco_val2014_annotations.json``
(``{"annotations": [{question_id, image_id, answers: [{answer, ...}], answer_type,
question_type, multiple_choice_answer}]}``). Images are ``COCO_<data_subtype>_<image_id:012d>.jpg``
in IMAGE_DIR (default: the questions file's folder). Task ``vqav2``; ``answer_type`` and
``question_type`` are kept in ``meta`` for the official per-answer-type breakdown.

``textvqa:FILE.json[@IMAGE_DIR]``: ``{"data": [{question, image_id, answers, question_id,
...}]}``; images are ``<image_id>.jpg``. Task ``textvqa``.
"""

from __future__ import annotations

from pathlib import Path

from vrp.data.benchmarks._common import (
    BenchSpec,
    Collector,
    field_of,
    id_of,
    list_field,
    peek_id,
    read_json,
    text_of,
)
from vrp.data.errors import DataSpecError
from vrp.data.items import Item


def _answers(rec: object) -> tuple[str, ...]:
    """The human answers of a VQAv2 annotation (``answers: [{answer: str}]``), non-empty."""
    raw = field_of(rec, "answers", list)
    if not raw:
        raise ValueError("'answers' is empty")
    out = []
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            raise ValueError("each of 'answers' must be an object with a string 'answer'")
        out.append(a["answer"])
    return tuple(out)


def _int_id(rec: object, key: str) -> int:
    return field_of(rec, key, int)  # type: ignore[return-value]


def load_vqav2(spec: BenchSpec, run_dir: Path) -> Collector:
    """Join the official questions and annotations by question id (see the module docstring)."""
    qpath, apath = spec.files
    qdoc = read_json(qpath, "vqav2")
    questions = list_field(qdoc, "questions", qpath, "vqav2 questions")
    annotations = list_field(read_json(apath, "vqav2"), "annotations", apath, "vqav2 annotations")
    subtype = qdoc.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise DataSpecError(f"{qpath} has no 'data_subtype' (e.g. val2014): cannot name its COCO images")
    c = Collector()
    by_qid: dict[int, dict] = {}
    for i, a in enumerate(annotations):
        src = f"{apath}:annotations[{i}]"
        try:
            qid = _int_id(a, "question_id")
            _int_id(a, "image_id")
            _answers(a)
            text_of(a, "answer_type")
            if qid in by_qid:
                raise ValueError(f"duplicate annotation for question_id {qid}")
        except ValueError as e:
            c.fail(src, str(e), peek_id(a, "question_id"))
            continue
        by_qid[qid] = a
    images = spec.images(qpath.parent)
    for i, q in enumerate(questions):
        src = f"{qpath}:questions[{i}]"

        def build(q: object = q, src: str = src) -> Item:
            qid, image_id = _int_id(q, "question_id"), _int_id(q, "image_id")
            question = text_of(q, "question")
            a = by_qid.get(qid)
            if a is None:
                raise ValueError(f"no valid annotation for question_id {qid} in {apath}")
            if a["image_id"] != image_id:
                raise ValueError(f"image_id {image_id} differs from the annotation's {a['image_id']}")
            return Item(
                id=str(qid),
                image=images.resolve(f"COCO_{subtype}_{image_id:012d}.jpg"),
                question=question,
                answers=_answers(a),
                task="vqav2",
                meta={
                    "question_id": qid,
                    "image_id": image_id,
                    "answer_type": a["answer_type"],
                    "question_type": a.get("question_type"),
                    "multiple_choice_answer": a.get("multiple_choice_answer"),
                    "source": src,
                },
            )

        c.consume(src, build, peek_id(q, "question_id"))
    return c


def load_textvqa(spec: BenchSpec, run_dir: Path) -> Collector:
    """Load a TextVQA ``data`` list (see the module docstring)."""
    path = spec.files[0]
    data = list_field(read_json(path, "textvqa"), "data", path, "textvqa")
    images = spec.images(path.parent)
    c = Collector()
    for i, rec in enumerate(data):
        src = f"{path}:data[{i}]"

        def build(rec: object = rec, src: str = src) -> Item:
            qid = id_of(rec, "question_id")
            image_id = text_of(rec, "image_id")
            question = text_of(rec, "question")
            answers = field_of(rec, "answers", list)
            if not answers or not all(isinstance(a, str) for a in answers):
                raise ValueError("'answers' must be a non-empty list of strings")
            return Item(
                id=qid,
                image=images.resolve(f"{image_id}.jpg"),
                question=question,
                answers=tuple(answers),
                task="textvqa",
                meta={
                    "question_id": rec["question_id"],
                    "image_id": image_id,
                    "set_name": rec.get("set_name"),
                    "source": src,
                },
            )

        c.consume(src, build, peek_id(rec, "question_id"))
    return c
