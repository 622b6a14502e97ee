"""Answer canonicalization and per-task scoring.

``c(.)`` (SPEC §1): lower-case, strip punctuation and articles, number words -> digits;
yes/no collapsing for yes/no tasks; integer extraction for counting. Every scorer returns
a soft score in [0, 1]; the binary label is ``score >= CORRECT_THRESHOLD`` (0.5). For the
official VQA-style accuracies that means at least two matching human answers
(2 matches -> 0.6, 1 match -> 0.3).

Benchmark tasks are scored by their official rules (:func:`score_generic` dispatches on
the task name, so the run pipeline has one entry point):

    pope            :func:`pope_label` of the answer == the gold label
    vqav2           :func:`vqa_accuracy` (official VQAv2, quirks included)
    textvqa         :func:`textvqa_accuracy` (EvalAI answer processor)
    amber           :func:`amber_correct` (official: the answer must be exactly "Yes"/"No")
    hallusionbench  :func:`hallusion_label` == gold (offline rule; the official score uses a GPT-4 judge)
    llava_bench     :func:`token_f1` against the reference answer: an OFFLINE FALLBACK, not
                    comparable to judge scores (see vrp.data.benchmarks.llava_bench)
    existence, yesno  first yes/no word; counting: first integer; anything else: canonical exact match
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from vrp.data.vqa_normalize import clean_whitespace, evalai_normalize, process_punctuation, vqa_normalize

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


# --------------------------------------------------------------------------- POPE


def pope_label(text: str) -> str:
    """POPE's official answer rule: ``"yes"`` or ``"no"``.

    Keep the text before the first ".", delete commas, split on single spaces; if any word
    is exactly "No", "not" or "no" the answer is "no", otherwise "yes". So "NO" and "No!"
    are "yes", and an empty answer is "yes", as in the official script.
    """
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _check_labels(name: str, values: Sequence[str]) -> None:
    bad = sorted({v for v in values if v not in ("yes", "no")}, key=repr)
    if bad:
        raise ValueError(f"{name} must be 'yes' or 'no', got {bad[:5]!r}")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict:
    """POPE's metrics with "yes" as the positive class.

    Args:
        predictions: "yes"/"no" per item (map raw answers with :func:`pope_label` first).
        labels: the gold "yes"/"no" per item, in the same order.

    Returns:
        ``{n, tp, fp, tn, fn, accuracy, precision, recall, f1, yes_ratio}`` as fractions in
        [0, 1], unrounded. Where the official script would divide by zero (no "yes"
        predictions, no "yes" labels, or precision + recall = 0), the value is 0.0.

    Raises:
        ValueError: on empty or unequal-length inputs or values other than "yes"/"no".
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not predictions:
        raise ValueError("pope_metrics needs at least one item")
    _check_labels("predictions", predictions)
    _check_labels("labels", labels)
    pairs = list(zip(predictions, labels, strict=True))
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(pairs)
    return {
        "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / n,
        "precision": precision, "recall": recall, "f1": f1, "yes_ratio": (tp + fp) / n,
    }  # fmt: skip


# --------------------------------------------------------------------------- VQAv2 / TextVQA


def _leave_one_out(prediction: str, answers: list[str]) -> float:
    """Mean over the leave-one-out subsets of the answers of min(#matches / 3, 1)."""
    if not answers:
        raise ValueError("at least one human answer is needed")
    hits = sum(a == prediction for a in answers)
    return sum(min(1.0, (hits - (a == prediction)) / 3) for a in answers) / len(answers)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQAv2 accuracy of one answer against the human answers (usually 10), in [0, 1].

    Newlines/tabs become spaces and both sides are stripped. If the human answers are not
    all identical, prediction and answers are normalized (vrp.data.vqa_normalize: punctuation,
    number words, articles, contractions). The official quirk: when all human answers are
    identical, nothing is normalized, so "Yes" against ten "yes" scores 0. The score is the
    mean over the n leave-one-out subsets of min(#matching answers / 3, 1): 1, 2, 3, >= 4
    matches out of 10 give 0.3, 0.6, 0.9, 1.0. With a single human answer the only subset is
    empty, so the score is always 0 (as the official formula gives).
    """
    pred = clean_whitespace(prediction)
    golds = [clean_whitespace(a) for a in answers]
    if len(set(golds)) > 1:
        golds = [vqa_normalize(a) for a in golds]
        pred = vqa_normalize(pred)
    return _leave_one_out(pred, golds)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy (EvalAI answer processor on both sides, always), in [0, 1].

    Same leave-one-out formula as :func:`vqa_accuracy`, but no all-identical exception:
    "Yes" against ten "yes" scores 1.
    """
    return _leave_one_out(evalai_normalize(prediction), [evalai_normalize(a) for a in answers])


# --------------------------------------------------------------------------- AMBER / HallusionBench


def amber_correct(response: str, truth: str) -> bool:
    """AMBER's official discriminative rule: truth "yes" needs exactly "Yes", "no" exactly "No".

    The official ``inference.py`` compares the submitted response string as is ("yes",
    "Yes." and "Yes, there is" are all wrong), so prompt the model to answer Yes or No.
    """
    return response == {"yes": "Yes", "no": "No"}.get(truth.strip().lower(), object())


def amber_metrics(responses: Sequence[str], truths: Sequence[str]) -> dict:
    """AMBER's discriminative metrics as its ``inference.py`` prints them (percent, 1 decimal).

    "no" is the positive class: precision = share of "No" responses whose truth is "no",
    recall = share of truth-"no" items answered "No"; F1 uses the rounded precision and
    recall and adds 0.0001 to the denominator, as the official script does. A metric whose
    denominator is zero (the official script would raise) is 0.0.
    """
    if len(responses) != len(truths) or not responses:
        raise ValueError("amber_metrics needs equal-length, non-empty responses and truths")
    truths = [t.strip().lower() for t in truths]
    _check_labels("truths", truths)
    n_correct = sum(amber_correct(r, t) for r, t in zip(responses, truths, strict=True))
    said_no = [t for r, t in zip(responses, truths, strict=True) if r == "No"]
    n_truth_no = sum(t == "no" for t in truths)
    hit_no = sum(t == "no" for t in said_no)

    def pct(a: int, b: int) -> float:
        return round(a / b * 100, 1) if b else 0.0

    precision, recall = pct(hit_no, len(said_no)), pct(hit_no, n_truth_no)
    f1 = round(2 * (precision / 100) * (recall / 100) / (precision / 100 + recall / 100 + 0.0001) * 100, 1)
    return {
        "n": len(truths),
        "accuracy": pct(n_correct, len(truths)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def hallusion_label(text: str) -> str:
    """yes / no / uncertain from a free-form answer (offline HallusionBench rule).

    HallusionBench's official score asks GPT-4 whether the answer agrees with the reference
    and maps the outcome to 0 (no), 1 (yes), 2 (uncertain). Offline, vrp reads the answer's
    own words as VLMEvalKit does for yes/no benchmarks: after the VQA punctuation rule, "yes"
    present and "no" absent -> "yes"; the reverse -> "no"; otherwise "uncertain" (scored
    wrong, as the official ``assign_correctness`` does for image questions).
    """
    words = process_punctuation(text.lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return "uncertain"


# --------------------------------------------------------------------------- free-form fallback


def token_f1(prediction: str, reference: str) -> float:
    """Unigram F1 between the canonical words of two texts (SQuAD style), in [0, 1].

    Used as the OFFLINE FALLBACK correctness score for LLaVA-Bench; it is NOT comparable
    to the judge-based LLaVA-Bench score.
    """
    p, r = canonicalize(prediction).split(), canonicalize(reference).split()
    if not p or not r:
        return float(p == r)
    overlap = sum((Counter(p) & Counter(r)).values())
    return 2 * overlap / (len(p) + len(r))


# --------------------------------------------------------------------------- dispatch


def score_generic(task: str, prediction: str, answers: tuple[str, ...] | list[str]) -> float:
    """Soft score in [0, 1] of ``prediction`` against the gold ``answers`` for ``task``.

    The single scoring entry point of the run pipeline; see the module docstring for which
    rule each task uses. Generic tasks: yes/no tasks compare the collapsed yes/no, counting
    the first integer, every other task canonical strings exactly (max over golds).
    """
    if task == "pope":
        p = pope_label(prediction)
        return float(any(p == yes_no(a) for a in answers))
    if task == "vqav2":
        return vqa_accuracy(prediction, answers)
    if task == "textvqa":
        return textvqa_accuracy(prediction, answers)
    if task == "amber":
        return float(any(amber_correct(prediction, a) for a in answers))
    if task == "hallusionbench":
        p = hallusion_label(prediction)
        return float(any(p == yes_no(a) for a in answers))
    if task == "llava_bench":
        return max(token_f1(prediction, a) for a in answers)
    if task in YES_NO_TASKS:
        p = yes_no(prediction)
        return float(p is not None and any(p == yes_no(a) for a in answers))
    if task in COUNT_TASKS:
        p = extract_int(prediction)
        return float(p is not None and any(p == extract_int(a) for a in answers))
    cp = canonicalize(prediction)
    return float(any(cp == canonicalize(a) for a in answers))


def canonical_answer(task: str, text: str) -> str | None:
    """The answer's cluster label for self-consistency: two answers get the same label
    exactly when ``task``'s scoring rule reads them as the same answer.

    Per task (the same dispatch as :func:`score_generic`):

    * pope: :func:`pope_label` ("yes"/"no"; never None, as the official rule reads every answer).
    * amber: "yes" / "no" for exactly "Yes" / "No", else None (the official rule scores every
      other response wrong, whatever the truth, so those form one unreadable cluster).
    * hallusionbench: :func:`hallusion_label` ("yes", "no" or "uncertain").
    * vqav2: the official VQA normalization (:func:`vqa_normalize` after whitespace cleanup),
      always (the official exception for all-identical human answers is about the golds).
    * textvqa: the EvalAI normalization (:func:`evalai_normalize`).
    * other yes/no tasks (existence, yesno): :func:`yes_no`, None without a yes/no word.
    * counting: the first integer as a string (:func:`extract_int`), None without one.
    * everything else (llava_bench, spatial, attribute, ...): :func:`canonicalize`.

    An answer that normalizes to the empty string is None (no answer).
    """
    if task == "pope":
        return pope_label(text)
    if task == "amber":
        return {"Yes": "yes", "No": "no"}.get(text)
    if task == "hallusionbench":
        return hallusion_label(text)
    if task == "vqav2":
        label = vqa_normalize(clean_whitespace(text))
    elif task == "textvqa":
        label = evalai_normalize(text)
    elif task in YES_NO_TASKS:
        return yes_no(text)
    elif task in COUNT_TASKS:
        n = extract_int(text)
        return None if n is None else str(n)
    else:
        label = canonicalize(text)
    return label.strip() or None


def is_correct(score: float, threshold: float = CORRECT_THRESHOLD) -> bool:
    """The binary correctness label: ``score >= threshold`` (default 0.5)."""
    return score >= threshold
