"""Official benchmark scorers (vrp.data.scoring): known cases written from each published rule."""

from __future__ import annotations

import random

import pytest

from vrp.data.scoring import (
    CORRECT_THRESHOLD,
    amber_correct,
    amber_metrics,
    hallusion_label,
    is_correct,
    pope_label,
    pope_metrics,
    score_generic,
    textvqa_accuracy,
    token_f1,
    vqa_accuracy,
)
from vrp.data.vqa_normalize import evalai_normalize, process_punctuation, vqa_normalize

# --------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No, there is no dog.", "no"),
        ("There is not a dog", "no"),
        ("The answer is no", "no"),
        ("no.", "no"),
        ("No", "no"),
        ("NO", "yes"),  # only "No", "not", "no" count
        ("No!", "yes"),  # the word is "No!", not "No"
        ("Not really", "yes"),  # "Not" is not in the list
        ("nope", "yes"),
        ("", "yes"),  # anything without a negative word is yes
        ("Yes. No.", "yes"),  # only the text before the first "." counts
        ("I think so. But no", "yes"),
        ("3.5 no", "yes"),  # "3" is all that is left
        ("no,thanks", "yes"),  # commas are deleted, not split on: "nothanks"
        ("well, no", "no"),  # "well no"
        ("there is\tno cat", "yes"),  # split on single spaces only: "is\tno" is one word
        ("there  no", "no"),  # a double space leaves an empty word, "no" is still one
    ],
)
def test_pope_label(text, expected):
    assert pope_label(text) == expected


def test_pope_metrics_known_counts():
    preds = ["yes", "yes", "no", "no", "yes"]
    labels = ["yes", "no", "no", "yes", "yes"]
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 1, 1, 1, 5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 5)


def test_pope_metrics_zero_division_is_zero():
    m = pope_metrics(["no", "no"], ["yes", "no"])  # no "yes" predicted: precision 0/0
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.0, 0.5)
    m = pope_metrics(["yes", "yes"], ["no", "no"])  # no "yes" label: recall 0/0
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"]) == (0.0, 0.0, 0.0, 1.0)


def test_pope_metrics_matches_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(1, 30)
        preds = [rng.choice(["yes", "no"]) for _ in range(n)]
        labels = [rng.choice(["yes", "no"]) for _ in range(n)]
        m = pope_metrics(preds, labels)
        kw = {"pos_label": "yes", "zero_division": 0}
        assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
        assert m["precision"] == pytest.approx(precision_score(labels, preds, **kw))
        assert m["recall"] == pytest.approx(recall_score(labels, preds, **kw))
        assert m["f1"] == pytest.approx(f1_score(labels, preds, **kw))


@pytest.mark.parametrize(
    ("preds", "labels"), [([], []), (["yes"], ["yes", "no"]), (["Yes"], ["yes"]), (["yes"], ["maybe"])]
)
def test_pope_metrics_rejects_bad_input(preds, labels):
    with pytest.raises(ValueError):
        pope_metrics(preds, labels)


# --------------------------------------------------------------------------- VQAv2 normalization


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("ten", "10"),
        ("eleven", "eleven"),  # the number map stops at ten
        ("none", "0"),
        ("A dog", "dog"),
        ("the red one", "red 1"),
        ("dont know", "don't know"),
        ("isnt", "isn't"),
        ("Im", "im"),  # the table's key is "Im": never matches after lower-casing
        ("dog's", "dog's"),  # apostrophe is not punctuation here
        ("red/white", "red white"),  # "/" touches no space: becomes a space
        ("red / white", "red white"),  # "/" touches a space: deleted
        ("t-shirt, red", "t shirt red"),  # "," touches a space (deleted), "-" does not (space)
        ("3,000", "3000"),  # digit-comma-digit: every punctuation mark deleted
        ("x-ray 3,5", "xray 35"),  # ... including the hyphen elsewhere in the answer
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("10 a.m.", "10 am"),
        ("yes!", "yes"),
        ("what?", "what"),
        ("it: is", "it: is"),  # ":" is not in the list
        ("  Yes\n", "yes"),
    ],
)
def test_vqa_normalize(text, expected):
    assert vqa_normalize(text) == expected


def test_period_strip_stops_after_32_periods():
    # The official code passes re.UNICODE (32) as the count of Pattern.sub.
    assert vqa_normalize("." * 40 + "yes") == "." * 8 + "yes"
    assert process_punctuation("a." * 3) == "aaa"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("3,000", "3000"),
        ("red, white", "red white"),  # commas deleted first
        ("hello?", "hello"),
        ("dog's", "dog 's"),  # "'s" split off
        ("The Two", "2"),
        ("dont", "don't"),
    ],
)
def test_evalai_normalize(text, expected):
    assert evalai_normalize(text) == expected


# --------------------------------------------------------------------------- VQAv2 / TextVQA accuracy


def test_identical_humans_are_compared_without_normalization():
    # The quirk the issue names: ten identical "yes" -> no normalization under VQAv2.
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert textvqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert textvqa_accuracy("yes.", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0  # whitespace is always cleaned
    # One different human answer switches normalization on for every answer.
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0


@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (9, 1.0), (10, 1.0)])
def test_leave_one_out_accuracy(k, expected):
    # k of 10 humans said "red": mean over the 10 leave-one-out subsets of min(matches / 3, 1).
    answers = ["red"] * k + ["blue"] * (10 - k)
    assert vqa_accuracy("red", answers) == pytest.approx(expected)
    assert textvqa_accuracy("red", answers) == pytest.approx(expected)


def test_leave_one_out_with_other_answer_counts():
    assert vqa_accuracy("a", ["a", "a", "a"]) == pytest.approx(2 / 3)  # every subset holds 2 matches
    assert vqa_accuracy("yes", ["yes"]) == 0.0  # the only subset is empty
    assert textvqa_accuracy("yes", ["yes"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Two", ["2"] * 3 + ["3"] * 7, 0.9),
        ("two dogs", ["2 dogs"] * 4 + ["3"] * 6, 1.0),
        ("A dog", ["dog"] * 4 + ["cat"] * 6, 1.0),
        ("dont know", ["don't know"] * 4 + ["no"] * 6, 1.0),
        ("Im", ["I'm"] * 4 + ["x"] * 6, 0.0),
        ("3,000", ["3000"] * 4 + ["many"] * 6, 1.0),
        ("x-ray 3,5", ["x ray 35"] * 4 + ["y"] * 6, 0.0),  # the gold keeps its space, the prediction does not
        ("eleven", ["11"] * 4 + ["x"] * 6, 0.0),
        ("10 a.m.", ["10 am"] * 2 + ["noon"] * 8, 0.6),
    ],
)
def test_vqa_accuracy_with_normalization(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("STOP.", ["stop"] * 10, 1.0),
        ("the Two", ["2"] * 10, 1.0),
        ("red, white", ["red white"] * 3 + ["red"] * 7, 0.9),
        ("coca-cola", ["coca cola"] * 4 + ["coke"] * 6, 1.0),
        ("coke", ["coca cola"] * 4 + ["coke"] * 6, 1.0),
        ("pepsi", ["coca cola"] * 4 + ["coke"] * 6, 0.0),
    ],
)
def test_textvqa_accuracy(prediction, answers, expected):
    assert textvqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_binary_threshold_on_soft_scores():
    one, two = vqa_accuracy("red", ["red"] + ["blue"] * 9), vqa_accuracy("red", ["red"] * 2 + ["blue"] * 8)
    assert CORRECT_THRESHOLD == 0.5
    assert not is_correct(one) and is_correct(two)


# --------------------------------------------------------------------------- AMBER / HallusionBench / fallback


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        ("Yes", "yes", True),
        ("No", "no", True),
        ("No", "yes", False),
        ("yes", "yes", False),  # exact strings only
        ("Yes.", "yes", False),
        ("Yes, there is", "yes", False),
        (" No", "no", False),
        ("Yes", "maybe", False),
    ],
)
def test_amber_correct(response, truth, expected):
    assert amber_correct(response, truth) is expected


def test_amber_metrics_no_is_positive():
    m = amber_metrics(["Yes", "No", "No", "yes", "No"], ["yes", "no", "yes", "no", "no"])
    # correct: 0, 1, 4 -> 60.0; "No" answers 1, 2, 4 of which truth no 1, 4 -> 66.7; truth no 1, 3, 4 -> 66.7
    assert m["accuracy"] == 60.0 and m["precision"] == 66.7 and m["recall"] == 66.7
    assert m["f1"] == round(2 * 0.667 * 0.667 / (0.667 + 0.667 + 0.0001) * 100, 1)
    m = amber_metrics(["Yes"], ["yes"])  # no "No" answer and no "no" truth
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (100.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, it is.", "yes"),
        ("No.", "no"),
        ("NO", "no"),
        ("yes and no", "uncertain"),
        ("I am not sure", "uncertain"),
        ("yesterday", "uncertain"),
    ],
)
def test_hallusion_label(text, expected):
    assert hallusion_label(text) == expected


def test_token_f1():
    assert token_f1("A red car.", "the red car") == 1.0
    assert token_f1("red", "red car") == pytest.approx(2 / 3)
    assert token_f1("blue bike", "red car") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("task", "prediction", "answers", "expected"),
    [
        ("pope", "No, there is not.", ["yes"], 0.0),
        ("pope", "No, there is not.", ["no"], 1.0),
        ("pope", "NO", ["no"], 0.0),  # POPE quirk ...
        ("existence", "NO", ["no"], 1.0),  # ... that the generic yes/no rule does not have
        ("pope", "Sure", ["yes"], 1.0),  # POPE: anything without a negative word is yes
        ("vqav2", "Yes", ["yes"] * 10, 0.0),
        ("textvqa", "Yes", ["yes"] * 10, 1.0),
        ("vqav2", "two", ["2"] * 2 + ["3"] * 8, 0.6),
        ("vqa", "The Two.", ["2"], 1.0),  # generic "vqa" keeps canonical exact match
        ("amber", "Yes", ["yes"], 1.0),
        ("amber", "yes", ["yes"], 0.0),
        ("hallusionbench", "Yes, they are.", ["yes"], 1.0),
        ("hallusionbench", "Not sure, yes or no", ["yes"], 0.0),
        ("llava_bench", "a red car", ["The red car."], 1.0),
        ("counting", "There are 3.", ["3"], 1.0),
        ("spatial", "Left.", ["left"], 1.0),
    ],
)
def test_score_generic_dispatch(task, prediction, answers, expected):
    s = score_generic(task, prediction, answers)
    assert isinstance(s, float) and s == pytest.approx(expected)
