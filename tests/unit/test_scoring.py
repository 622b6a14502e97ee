"""Answer canonicalization and per-task scoring (vrp.data.scoring)."""

from __future__ import annotations

import pytest

from vrp.data.scoring import (
    CORRECT_THRESHOLD,
    canonicalize,
    extract_int,
    is_correct,
    score_generic,
    yes_no,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Two.", "2"),
        ("two", "2"),
        ("A red circle", "red circle"),
        ("an apple, the pear & a plum!", "apple pear plum"),
        ("  LEFT  ", "left"),
        ("left.", "left"),
        ("It's red!!!", "it s red"),
        ("Twelve (12) objects", "12 12 objects"),
        ("zero", "0"),
        ("None", "0"),
        ("theme another", "theme another"),  # articles only as whole words
        ("", ""),
        ("...", ""),
        ("The", ""),
        ("snake_case stays", "snake_case stays"),  # underscore is a word character
        ("line\nbreak\ttab", "line break tab"),
    ],
)
def test_canonicalize(text, expected):
    assert canonicalize(text) == expected


def test_canonicalize_is_idempotent():
    for text in ["The Two.", "Yes, there is a red circle.", "An  eleven-sided thing?", "blue"]:
        once = canonicalize(text)
        assert canonicalize(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is.", "yes"),
        ("yes", "yes"),
        ("YES!", "yes"),
        ("No.", "no"),
        ("no, there is not", "no"),
        ("I think no", "no"),
        ("Yes and no", "yes"),  # the first one wins
        ("No - yes", "no"),
        ("maybe", None),
        ("", None),
        ("nope", None),
        ("yesterday", None),  # whole words only
        ("None.", None),  # "none" is a number word, not "no"
    ],
)
def test_yes_no(text, expected):
    assert yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("three objects", 3),
        ("there are 4", 4),
        ("4", 4),
        ("There are twelve.", 12),
        ("10 or 11", 10),
        ("none", 0),
        ("0", 0),
        ("many", None),
        ("", None),
        ("3.5", 3),  # punctuation splits "3.5" into 3 and 5
        ("-2", 2),  # the minus sign is punctuation
        ("2nd", None),
        ("007", 7),
    ],
)
def test_extract_int(text, expected):
    assert extract_int(text) == expected


@pytest.mark.parametrize("text", ["²", "there are ③"])
def test_extract_int_unicode_digits_do_not_crash(text):
    assert extract_int(text) is None or isinstance(extract_int(text), int)
    assert score_generic("counting", text, ["2"]) in (0.0, 1.0)


@pytest.mark.parametrize(
    ("task", "prediction", "answers", "expected"),
    [
        # yes/no tasks: collapse both sides to yes/no
        ("existence", "Yes, there is.", ["yes"], 1.0),
        ("existence", "No.", ["yes"], 0.0),
        ("existence", "No, there isn't", ["no"], 1.0),
        ("existence", "maybe", ["yes"], 0.0),
        ("existence", "maybe", ["maybe"], 0.0),  # no yes/no in the prediction
        ("pope", "yes", ["Yes."], 1.0),
        ("yesno", "no", ["yes", "no"], 1.0),
        ("amber", "Yes", ["no"], 0.0),
        ("hallusionbench", "no", ["No"], 1.0),
        # counting: first integer
        ("counting", "three objects", ["3"], 1.0),
        ("counting", "There are 4.", ["4"], 1.0),
        ("counting", "4 or 5", ["5"], 0.0),
        ("counting", "five", ["5"], 1.0),
        ("counting", "several", ["3"], 0.0),
        ("counting", "2", ["two", "3"], 1.0),
        # every other task: exact canonical match, max over golds
        ("spatial", "Left.", ["left"], 1.0),
        ("spatial", "to the left", ["left"], 0.0),
        ("spatial", "above", ["below"], 0.0),
        ("attribute", "Red", ["red"], 1.0),
        ("attribute", "dark red", ["red"], 0.0),
        ("attribute", "the blue", ["green", "blue"], 1.0),
        ("vqa", "The Two.", ["2"], 1.0),
        ("vqa", "yes", ["Yes, there is."], 0.0),  # no yes/no collapsing outside yes/no tasks
        ("vqa", "3 objects", ["3"], 0.0),  # no integer extraction outside counting
    ],
)
def test_score_generic(task, prediction, answers, expected):
    s = score_generic(task, prediction, answers)
    assert s == expected
    assert isinstance(s, float)
    assert is_correct(s) == (expected >= CORRECT_THRESHOLD)


def test_score_accepts_tuple_answers():
    assert score_generic("counting", "3", ("2", "3")) == 1.0


def test_is_correct_threshold():
    assert is_correct(CORRECT_THRESHOLD)
    assert not is_correct(CORRECT_THRESHOLD - 1e-9)
    assert is_correct(0.3, threshold=0.25)
    assert not is_correct(0.0) and is_correct(1.0)
