"""Answer canonicalization and per-task scoring for the generic item format.

``c(.)`` (SPEC §1): lower-case, strip punctuation and articles, number words -> digits;
yes/no collapsing for yes/no tasks; integer extraction for counting. Every scorer returns
a soft score in [0, 1]; the binary label is ``score >= CORRECT_THRESHOLD``.
"""

from __future__ import annotations

import re

CORRECT_THRESHOLD = 0.5

NUMBER_WORDS = {
    "zero": "0", "none": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]")

YES_NO_TASKS = {"existence", "yesno", "pope", "amber", "hallusionbench"}
COUNT_TASKS = {"counting"}


def canonicalize(text: str) -> str:
    """Lower-case, strip punctuation and articles, map number words to digits."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def yes_no(text: str) -> str | None:
    """The first "yes" or "no" word of the canonical answer, or None if there is none."""
    for w in canonicalize(text).split():
        if w in ("yes", "no"):
            return w
    return None


def extract_int(text: str) -> int | None:
    """The first integer in the answer (digits or number words), or None."""
    for w in canonicalize(text).split():
        if w.isascii() and w.isdigit():
            return int(w)
    return None


def score_generic(task: str, prediction: str, answers: tuple[str, ...] | list[str]) -> float:
    """Soft score of ``prediction`` against the gold ``answers`` for a generic-format task.

    yes/no tasks compare the collapsed yes/no; counting compares the first integer; every
    other task compares canonical strings exactly (max over golds).
    """
    if task in YES_NO_TASKS:
        p = yes_no(prediction)
        return float(p is not None and any(p == yes_no(a) for a in answers))
    if task in COUNT_TASKS:
        p = extract_int(prediction)
        return float(p is not None and any(p == extract_int(a) for a in answers))
    cp = canonicalize(prediction)
    return float(any(cp == canonicalize(a) for a in answers))


def is_correct(score: float, threshold: float = CORRECT_THRESHOLD) -> bool:
    return score >= threshold
