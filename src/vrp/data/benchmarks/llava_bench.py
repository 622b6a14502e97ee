"""LLaVA-Bench (in-the-wild): loader, and the judge pipeline of its official score.

``llava_bench:DIR[@IMAGE_DIR][#conv|detail|complex]`` reads the published folder:
``questions.jsonl`` (``{question_id, image, text, category}``), ``context.jsonl``
(``{image, caption}``; the caption is a string or a list of strings) and
``answers_gpt4.jsonl`` (the reference answers, ``{question_id, text}``), images in
``DIR/images`` unless ``@IMAGE_DIR`` is given. Questions are joined to references by
``question_id`` and to contexts by ``image`` (the official script zips the files line by
line; on the published files both give the same pairs). Task ``llava_bench``.

The official score needs a judge model: for each question the judge sees the context
(caption), the question, the reference answer as "Assistant 1" and the model's answer as
"Assistant 2", and writes "score1 score2" on its first line (:func:`judge_prompt`,
:func:`parse_scores`). :func:`aggregate` then reports, per category and overall, the mean
scores and the relative score ``mean(model) / mean(reference) * 100``, as
``summarize_gpt_review.py`` does. Any callable ``judge(prompt: JudgePrompt) -> str``
(a local model, an API client) plugs in (:class:`Judge`, :func:`review`).

Offline, the run pipeline labels answers with ``token_f1`` against the reference
(``correct = F1 >= 0.5``). That fallback is documented as NOT comparable to judge-based
LLaVA-Bench scores: it is a correctness label for reliability analysis only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vrp.data.benchmarks._common import BenchSpec, Collector, id_of, iter_jsonl, peek_id, text_of
from vrp.data.errors import DataSpecError
from vrp.data.items import Item

SPLITS = ("conv", "detail", "complex")
FILES = ("questions.jsonl", "context.jsonl", "answers_gpt4.jsonl")

JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with a few sentences describing the image. \n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives "
    "an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space.\n"
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your judgment."
)  # the official rule of the llava_bench_{conv,detail,complex} categories (all three are the same)


def _caption(rec: object) -> str:
    cap = rec.get("caption") if isinstance(rec, dict) else None
    if isinstance(cap, list) and cap and all(isinstance(s, str) for s in cap):
        return "\n".join(cap)
    if isinstance(cap, str) and cap.strip():
        return cap
    raise ValueError("'caption' must be a non-empty string or list of strings")


def _index_jsonl(
    c: Collector,
    path: Path,
    key_of: Callable[[dict], str],
    value_of: Callable[[dict], str],
    duplicate: str,
    fail_id_key: str | None = None,
) -> dict[str, str]:
    """``{key_of(rec): value_of(rec)}`` over a JSONL file; a bad record or a repeated key
    (message ``duplicate.format(key)``) is a failure in ``c``, the first value is kept."""
    out: dict[str, str] = {}
    for src, rec in iter_jsonl(path):
        try:
            if isinstance(rec, ValueError):
                raise rec
            key = key_of(rec)
            if key in out:
                raise ValueError(duplicate.format(key))
            out[key] = value_of(rec)
        except ValueError as e:
            c.fail(src, str(e), peek_id(rec, fail_id_key) if fail_id_key else None)
    return out


def load_llava_bench(spec: BenchSpec, run_dir: Path) -> Collector:
    """Load the LLaVA-Bench folder (see the module docstring)."""
    root = spec.files[0]
    if not root.is_dir():
        raise DataSpecError(f"llava_bench needs the benchmark folder (holding {', '.join(FILES)}), got {root}")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise DataSpecError(f"{root} is not a LLaVA-Bench folder: missing {', '.join(missing)}")
    c = Collector()
    contexts = _index_jsonl(
        c, root / "context.jsonl", lambda r: text_of(r, "image"), _caption, "duplicate context for image {!r}"
    )
    references = _index_jsonl(
        c,
        root / "answers_gpt4.jsonl",
        lambda r: id_of(r, "question_id"),
        lambda r: text_of(r, "text"),
        "duplicate reference answer for question_id {}",
        fail_id_key="question_id",
    )
    images = spec.images(root / "images")
    for src, rec in iter_jsonl(root / "questions.jsonl"):

        def build(rec: object = rec, src: str = src) -> Item | None:
            if isinstance(rec, ValueError):
                raise rec
            qid, image, question = id_of(rec, "question_id"), text_of(rec, "image"), text_of(rec, "text")
            category = text_of(rec, "category")
            if category not in SPLITS:
                raise ValueError(f"category {category!r} is not one of {', '.join(SPLITS)}")
            if image not in contexts:
                raise ValueError(f"no valid context for image {image!r} in context.jsonl")
            if qid not in references:
                raise ValueError(f"no valid reference answer for question_id {qid} in answers_gpt4.jsonl")
            if not spec.wants(category):
                return None
            return Item(
                id=qid,
                image=images.resolve(image),
                question=question,
                answers=(references[qid],),
                task="llava_bench",
                meta={"split": category, "question_id": rec["question_id"], "caption": contexts[image], "source": src},
            )

        c.consume(src, build, peek_id(rec, "question_id"))
    return c


# --------------------------------------------------------------------------- judge pipeline


@dataclass(frozen=True)
class JudgePrompt:
    """What the judge model is asked: a system message and one user message."""

    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (``[{role, content}]``)."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


class Judge(Protocol):
    """A judge model: takes the prompt, returns its review text (first line "score1 score2")."""

    def __call__(self, prompt: JudgePrompt) -> str: ...


def judge_prompt(question: str, caption: str, reference: str, answer: str) -> JudgePrompt:
    """The official review prompt: reference = Assistant 1, the model's answer = Assistant 2."""
    user = (
        f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{JUDGE_RULE}\n\n"
    )
    return JudgePrompt(JUDGE_SYSTEM, user)


def parse_scores(review: str) -> tuple[float, float]:
    """(reference score, model score) from the review's first line, as the official parser.

    Commas count as spaces, the line must split on single spaces into exactly two numbers;
    anything else gives (-1, -1), which the official summary averages in unchanged.
    """
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return (-1.0, -1.0)
    try:
        return (float(parts[0]), float(parts[1]))
    except ValueError:
        return (-1.0, -1.0)


@dataclass(frozen=True)
class Review:
    """One judged item."""

    id: str
    category: str
    reference_score: float
    model_score: float
    text: str


def review(rows: Iterable[dict], judge: Judge) -> list[Review]:
    """Judge the ``llava_bench`` rows of a run (``items.parquet`` rows: question, answer, gold, meta)."""
    out = []
    for r in rows:
        if r["task"] != "llava_bench":
            continue
        meta = json.loads(r["meta"]) if isinstance(r["meta"], str) else r["meta"]
        text = judge(judge_prompt(r["question"], meta["caption"], next(iter(r["gold"])), r["answer"]))
        ref, model = parse_scores(text)
        out.append(Review(str(r["id"]), meta["split"], ref, model, text))
    return out


def aggregate(reviews: Iterable[Review]) -> dict[str, dict]:
    """Per category and ``all``: n, parse errors, mean scores and the relative score.

    As the official summary: means include unparsed (-1, -1) reviews, are rounded to 3
    decimals, and relative = round(model / reference * 100, 1) (NaN if the reference mean is 0).
    """
    groups: dict[str, list[Review]] = defaultdict(list)
    for rv in reviews:
        groups[rv.category].append(rv)
        groups["all"].append(rv)
    out = {}
    for name, rs in sorted(groups.items()):
        ref = round(sum(r.reference_score for r in rs) / len(rs), 3)
        model = round(sum(r.model_score for r in rs) / len(rs), 3)
        out[name] = {
            "n": len(rs),
            "parse_errors": sum(r.reference_score == -1 and r.model_score == -1 for r in rs),
            "reference": ref,
            "model": model,
            "relative": round(model / ref * 100, 1) if ref else float("nan"),
        }
    return out
