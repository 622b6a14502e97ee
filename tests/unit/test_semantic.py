"""Semantic entropy's clustering and statistics (vrp.signals.semantic) against hand-worked
cases, with stub entailment judges in place of an NLI model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from vrp.signals.behavioral import answer_entropy, self_consistency
from vrp.signals.semantic import (
    cluster_batch,
    cluster_by_entailment,
    entailment_pairs,
    equivalent,
    nli_text,
    semantic_consistency,
    semantic_entropy,
)


def judge(relation: set[tuple[str, str]]):
    """A stub judge: ``a`` entails ``b`` exactly when (a, b) is listed; it records its calls."""

    def entails(a: str, b: str) -> bool:
        entails.calls.append((a, b))
        return (a, b) in relation

    entails.calls = []
    return entails


def never(a: str, b: str) -> bool:
    return False


def always(a: str, b: str) -> bool:
    return True


def test_identical_answers_are_one_cluster_without_asking_the_judge():
    j = judge(set())
    labels = cluster_by_entailment(["red", "red", "red", "red"], j)
    assert labels == [0, 0, 0, 0] and j.calls == []
    assert semantic_entropy(labels) == 0.0 and semantic_consistency(labels) == 1.0


def test_mutual_entailment_merges_one_way_does_not():
    # "red" <-> "crimson" both ways; "a red square" entails "red" but not the reverse
    rel = {("red", "crimson"), ("crimson", "red"), ("a red square", "red")}
    labels = cluster_by_entailment(["red", "crimson", "a red square", "red"], judge(rel))
    assert labels == [0, 0, 1, 0]
    assert equivalent("red", "crimson", judge(rel)) and not equivalent("red", "a red square", judge(rel))
    assert semantic_consistency(labels) == pytest.approx(3 / 4)
    assert semantic_entropy(labels) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_each_answer_is_compared_with_each_clusters_first_member_only():
    """Greedy assignment (Kuhn et al., Algorithm 1): "b" is equivalent to "c" but not to "a",
    the representative of the cluster "c" would otherwise join; non-transitivity is kept."""
    rel = {("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")}
    j = judge(rel)
    assert cluster_by_entailment(["a", "b", "c"], j) == [0, 0, 1]
    assert ("b", "c") not in j.calls and ("c", "b") not in j.calls  # "c" only meets "a", cluster 0's first member
    # the first equivalent cluster wins; a later cluster is not asked
    assert cluster_by_entailment(["x", "y", "z"], judge({("x", "z"), ("z", "x"), ("y", "z"), ("z", "y")})) == [0, 1, 0]


def test_all_different_is_log_k_and_one_over_k():
    k = 7
    labels = cluster_by_entailment([f"answer {i}" for i in range(k)], never)
    assert labels == list(range(k))
    assert semantic_entropy(labels) == pytest.approx(math.log(k))
    assert semantic_consistency(labels) == pytest.approx(1 / k)
    assert cluster_by_entailment([f"answer {i}" for i in range(k)], always) == [0] * k


def test_no_samples_is_nan():
    assert cluster_by_entailment([], never) == []
    assert math.isnan(semantic_entropy([])) and math.isnan(semantic_consistency([]))
    assert cluster_batch([], [], lambda pairs: []) == []


@pytest.mark.parametrize("labels", [[0, 0, 1, 2, 2, 2], ["yes", "no", None, "yes"], [None, None], ["a"]])
def test_over_canonical_answers_it_is_answer_entropy_and_self_consistency(labels):
    """Any hashable labels are clusters: over the canonical answers the two signals are, bit
    for bit, answer_entropy and self_consistency (what a run without --nli-model stores)."""
    assert semantic_entropy(labels) == answer_entropy(labels)
    assert semantic_consistency(labels) == self_consistency(labels)
    counts = np.unique([str(x) for x in labels], return_counts=True)[1]
    assert semantic_entropy(labels) == pytest.approx(scipy_entropy(counts))


def test_pairs_are_both_orders_of_distinct_answers_given_the_question():
    q = "What colour is the square?"
    assert nli_text(q, "red") == "What colour is the square? red"
    pairs = entailment_pairs(q, ["red", "blue", "red"])
    assert pairs == [(nli_text(q, "red"), nli_text(q, "blue")), (nli_text(q, "blue"), nli_text(q, "red"))]
    assert entailment_pairs(q, ["red", "red"]) == []


def test_cluster_batch_asks_once_for_every_pair_and_matches_the_one_item_clustering():
    questions = ["Q1?", "Q2?", "Q1?"]
    answers = [["red", "crimson", "blue"], ["yes", "yes"], ["red", "crimson", "blue"]]
    mutual = {("red", "crimson"), ("crimson", "red")}

    def by_text(pairs):
        by_text.calls += 1
        by_text.n = len(pairs)
        return [(p.split("? ")[1], h.split("? ")[1]) in mutual for p, h in pairs]

    by_text.calls = 0
    got = cluster_batch(questions, answers, by_text)
    assert by_text.calls == 1 and by_text.n == 6  # item 3 repeats item 1's pairs; item 2 has one distinct answer
    assert got == [[0, 0, 1], [0, 0], [0, 0, 1]]
    for a, labels in zip(answers, got, strict=True):
        assert labels == cluster_by_entailment(a, lambda x, y: (x, y) in mutual)
    with pytest.raises(ValueError, match="verdicts"):
        cluster_batch(["Q?"], [["a", "b"]], lambda pairs: [True])


def _signal_inputs(samples, clusters=None):
    from vrp.signals import SignalInputs

    return SignalInputs(
        task="color", answer_ids=np.array([0]), logprobs=np.log(np.array([[0.6, 0.4]])), n_content=1, stop=1,
        image_attention=np.full((1, 1, 1, 2, 2), 0.25), image_mass=np.full((1, 1, 1), 0.5),
        samples=samples, semantic_clusters=clusters,
    )  # fmt: skip


def test_the_catalog_reads_the_judges_clusters_or_else_the_canonical_answers():
    from vrp.signals import compute
    from vrp.signals.catalog import BY_NAME, SEMANTIC

    assert {BY_NAME[n].family for n in SEMANTIC} == {"behavioral"}
    assert (BY_NAME["semantic_entropy"].direction, BY_NAME["semantic_consistency"].direction) == ("lower", "higher")
    samples = ("red", "Red.", "crimson", "blue")
    canonical = compute(_signal_inputs(samples)).values  # red, red, crimson, blue: 3 clusters
    assert canonical["semantic_entropy"] == canonical["answer_entropy"] == pytest.approx(scipy_entropy([2, 1, 1]))
    assert canonical["semantic_consistency"] == canonical["self_consistency"] == 0.5
    judged = compute(_signal_inputs(samples, clusters=(0, 0, 0, 1))).values  # a judge merged crimson with red
    assert judged["semantic_entropy"] == pytest.approx(scipy_entropy([3, 1]))
    assert judged["semantic_consistency"] == 0.75
    assert judged["answer_entropy"] == canonical["answer_entropy"]  # the canonical signals do not move
    none = compute(_signal_inputs(None)).values
    assert math.isnan(none["semantic_entropy"]) and math.isnan(none["semantic_consistency"])
    with pytest.raises(ValueError, match="semantic_clusters"):
        _signal_inputs(samples, clusters=(0, 1))
