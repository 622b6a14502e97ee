"""Batch mode of ``vrp ask``: answer a JSONL file of questions, writing one answer per line.

Input: the generic item format (:mod:`vrp.data.items`), where only ``id``, ``image`` (relative
to the file's folder) and ``question`` are required; ``answers`` and ``task`` are optional
here (a deployed model has no gold answers). When a record has them, it is validated as a
full generic item and its answer is also scored with the run pipeline's scorer.

Output, one JSON object per answered record, in input order:
``{"id", "answer", "p_correct", "abstain", "predicted_consistency"}`` (null with a monitor
that has no consistency head), plus ``"score"`` and ``"correct"`` for records with gold answers. A malformed record, a duplicate id or an unreadable image is reported
(``file:line`` and the reason) and skipped; the other records are answered. The output is
streamed to a temporary name (``.NAME.tmp``) and renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vrp.data.items import parse_record, resolve_image


@dataclass(frozen=True)
class Question:
    id: str
    image: str  # absolute path
    question: str
    source: str  # "file:line"
    task: str | None = None
    answers: tuple[str, ...] = ()


def parse_question(rec: object, root: Path, source: str) -> Question:
    """One record -> :class:`Question`; raises ValueError with the reason."""
    if not isinstance(rec, dict):
        raise ValueError(f"record must be a JSON object, got {type(rec).__name__}")
    if "answers" in rec or "task" in rec:  # a full generic item: validated as such
        item = parse_record(rec, root)
        return Question(item.id, item.image, item.question, source, item.task, item.answers)
    for key in ("id", "image", "question"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"missing or non-string field {key!r}")
    return Question(rec["id"], str(resolve_image(root, rec["image"])), rec["question"], source)


def read_questions(path: Path) -> tuple[list[Question], list[tuple[str, str]]]:
    """Questions of a JSONL file and the (source, reason) of every record skipped."""
    questions, failures, seen = [], [], set()
    with Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            src = f"{path}:{lineno}"
            try:
                q = parse_question(json.loads(raw.decode("utf-8")), Path(path).parent, src)
                if q.id in seen:
                    raise ValueError(f"duplicate id {q.id!r}")
                seen.add(q.id)
                questions.append(q)
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
                failures.append((src, str(e)))
    return questions, failures


def answer_file(
    monitor,
    in_path: Path,
    out_path: Path,
    batch_size: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Answer every question of ``in_path`` with an attached monitor, writing ``out_path``.

    Returns:
        Counts: ``{"answered", "skipped", "abstained"}``.
    """
    from vrp.data.images import open_image
    from vrp.data.scoring import is_correct, score_generic

    def skip(source: str, reason: str) -> None:
        skipped.append((source, reason))
        if on_skip:
            on_skip(source, reason)

    skipped: list[tuple[str, str]] = []
    qs, bad = read_questions(in_path)
    for src, reason in bad:
        skip(src, reason)
    bs = batch_size or int(monitor.info["generation"]["batch_size"])
    counts = {"answered": 0, "skipped": 0, "abstained": 0}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for s in range(0, len(qs), bs):
            chunk, images = [], []
            for q in qs[s : s + bs]:
                try:
                    images.append(open_image(q.image))
                    chunk.append(q)
                except ValueError as e:
                    skip(f"{q.source} (id {q.id})", str(e))
            for q, a in _answer_chunk(monitor, chunk, images, skip):
                rec = {"id": q.id, "answer": a.text, "p_correct": a.p_correct, "abstain": a.abstain,
                       "predicted_consistency": a.predicted_consistency}  # fmt: skip
                if q.answers:
                    rec["score"] = score_generic(q.task, a.text, q.answers)
                    rec["correct"] = is_correct(rec["score"])
                counts["answered"] += 1
                counts["abstained"] += a.abstain
                out.write(json.dumps(rec) + "\n")
            out.flush()
            if on_progress:
                on_progress(min(s + bs, len(qs)), len(qs))
        os.fsync(out.fileno())
    os.replace(tmp, out_path)
    counts["skipped"] = len(skipped)
    return counts


def _answer_chunk(monitor, chunk: list[Question], images: list, skip) -> list:
    """Answers of a chunk; if the batch fails, its questions one by one (only the failing one is lost)."""
    if not chunk:
        return []
    try:
        return list(
            zip(chunk, monitor.ask_many(images, [q.question for q in chunk], batch_size=len(chunk)), strict=True)
        )
    except Exception as e:
        if len(chunk) == 1:
            skip(f"{chunk[0].source} (id {chunk[0].id})", f"{type(e).__name__}: {e}")
            return []
        return [r for q, im in zip(chunk, images, strict=True) for r in _answer_chunk(monitor, [q], [im], skip)]
