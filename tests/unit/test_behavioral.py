"""Behavioral signals against hand computation and scipy, and the canonical-answer labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.stats import entropy

from vrp.data.scoring import canonical_answer
from vrp.signals.behavioral import (
    answer_entropy,
    first_step_entropy,
    geometric_mean_prob,
    self_consistency,
    stop_index,
    token_confidence,
)

# ---------------------------------------------------------------- self-consistency / entropy


@pytest.mark.parametrize("k", [1, 2, 10])
def test_all_agree_gives_one_and_zero_entropy(k):
    answers = ["yes"] * k
    assert self_consistency(answers) == 1.0
    assert answer_entropy(answers) == 0.0


@pytest.mark.parametrize("k", [2, 5, 10])
def test_all_differ_gives_one_over_k_and_log_k(k):
    answers = [str(i) for i in range(k)]
    assert self_consistency(answers) == pytest.approx(1 / k)
    assert answer_entropy(answers) == pytest.approx(math.log(k))


def test_known_mix_matches_hand_and_scipy():
    answers = ["red", "red", "blue", "red", None, "blue", "red", None, None, "green"]
    assert self_consistency(answers) == pytest.approx(4 / 10)
    counts = [4, 2, 3, 1]  # red, blue, None, green
    assert answer_entropy(answers) == pytest.approx(entropy(counts))
    assert answer_entropy(answers) == pytest.approx(-sum(c / 10 * math.log(c / 10) for c in counts))


def test_none_is_one_cluster():
    assert self_consistency([None, None, None]) == 1.0
    assert self_consistency([None, "yes", None, "no"]) == 0.5
    assert answer_entropy([None, "yes"]) == pytest.approx(math.log(2))


def test_order_does_not_matter_and_empty_is_refused():
    a = ["1", "2", "2", "3", "2"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        b = list(rng.permutation(a))
        assert self_consistency(b) == self_consistency(a) == 0.6
        assert answer_entropy(b) == pytest.approx(answer_entropy(a))
    with pytest.raises(ValueError, match="at least one"):
        self_consistency([])
    with pytest.raises(ValueError, match="at least one"):
        answer_entropy([])


# ---------------------------------------------------------------- token signals


def _logprobs(rows: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(rows, dtype=np.float64))


def test_token_confidence_is_first_emitted_token_probability():
    lp = _logprobs([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert token_confidence(lp, np.array([0, 2])) == pytest.approx(0.7)
    assert token_confidence(lp, np.array([1, 2])) == pytest.approx(0.2)
    assert math.isnan(token_confidence(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)))


def test_geometric_mean_matches_hand_computation():
    lp = _logprobs([[0.5, 0.25, 0.25], [0.2, 0.8, 1e-12], [0.1, 0.1, 0.8]])
    ids = np.array([0, 1, 2])
    assert geometric_mean_prob(lp, ids) == pytest.approx((0.5 * 0.8 * 0.8) ** (1 / 3))
    assert geometric_mean_prob(lp, ids, stop=2) == pytest.approx((0.5 * 0.8) ** 0.5)
    assert geometric_mean_prob(lp, ids, stop=1) == pytest.approx(0.5)
    assert math.isnan(geometric_mean_prob(lp, ids, stop=0))
    # a single-token answer: geometric mean == token confidence
    assert geometric_mean_prob(lp[:1], ids[:1]) == pytest.approx(token_confidence(lp[:1], ids[:1]))
    with pytest.raises(ValueError, match="stop"):
        geometric_mean_prob(lp, ids, stop=4)


def test_stop_index_finds_first_stop_token():
    ids = np.array([5, 9, 13, 2, 13])
    assert stop_index(ids, [13, 2]) == 2
    assert stop_index(ids, [2]) == 3
    assert stop_index(ids, [7]) == 5
    assert stop_index(np.zeros(0, dtype=np.int64), [2]) == 0


def test_first_step_entropy_against_scipy_and_uniform():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 50)) * 3
    lp = log_softmax(logits, axis=-1)
    assert first_step_entropy(lp) == pytest.approx(entropy(np.exp(lp[0])))
    assert first_step_entropy(np.full((2, 64), -math.log(64))) == pytest.approx(math.log(64))
    # masked tokens (log p = -inf, as after top-p) contribute 0, not NaN
    masked = np.array([[math.log(0.5), math.log(0.5), -np.inf, -np.inf]])
    assert first_step_entropy(masked) == pytest.approx(math.log(2))
    # a one-hot step has zero entropy
    assert first_step_entropy(np.array([[0.0, -np.inf, -np.inf]])) == 0.0
    assert math.isnan(first_step_entropy(np.zeros((0, 5))))


def test_token_signals_validate_shapes():
    lp = _logprobs([[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        token_confidence(lp, np.array([0, 1]))
    with pytest.raises(ValueError, match="vocabulary"):
        token_confidence(lp, np.array([2]))
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        first_step_entropy(np.zeros(3))


# ---------------------------------------------------------------- canonical answers


@pytest.mark.parametrize(
    ("task", "text", "label"),
    [
        ("existence", "Yes, there is.", "yes"),
        ("existence", "no", "no"),
        ("existence", "maybe", None),
        ("yesno", "NO!", "no"),
        ("counting", "three", "3"),
        ("counting", "There are 4 objects", "4"),
        ("counting", "several", None),
        ("spatial", "Left.", "left"),
        ("attribute", "The Blue", "blue"),
        ("attribute", "", None),
        ("attribute", "?!", None),
        ("pope", "No, there is not.", "no"),
        ("pope", "", "yes"),  # the official rule reads an empty answer as "yes"
        ("amber", "Yes", "yes"),
        ("amber", "No", "no"),
        ("amber", "yes", None),  # the official rule needs exactly "Yes"
        ("amber", "Yes.", None),
        ("hallusionbench", "Yes, it is.", "yes"),
        ("hallusionbench", "yes and no", "uncertain"),
        ("vqav2", "Two dogs.", "2 dogs"),
        ("vqav2", "dont know", "don't know"),
        ("textvqa", "Coca-Cola's", "coca cola 's"),
        ("llava_bench", "A red car.", "red car"),
    ],
)
def test_canonical_answer_labels(task, text, label):
    assert canonical_answer(task, text) == label


def test_canonical_answer_merges_what_the_scorer_cannot_tell_apart():
    from vrp.data.scoring import score_generic

    for task, a, b, gold in [
        ("existence", "Yes.", "yes, there is", "yes"),
        ("counting", "two", "2 objects", "2"),
        ("attribute", "The red", "red!", "red"),
        ("vqav2", "Two", "2", "2"),
    ]:
        assert canonical_answer(task, a) == canonical_answer(task, b)
        assert score_generic(task, a, [gold, "x"]) == score_generic(task, b, [gold, "x"])
    samples = ["Yes.", "yes", "No", "yes, there is", "hmm"]
    labels = [canonical_answer("existence", s) for s in samples]
    assert self_consistency(labels) == pytest.approx(3 / 5)
