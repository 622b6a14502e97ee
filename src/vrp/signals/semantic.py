"""Semantic entropy (Kuhn et al. 2023, "Semantic Uncertainty"): the K sampled answers of an
item clustered by meaning, and the spread of the samples over those clusters.

Pure functions; the entailment judge is a callable, so these run and are tested without a
model. ``vrp run --nli-model PATH`` passes a natural-language-inference classifier
(:mod:`vrp.models.nli`); without it the run's clusters are the canonical answers
(:func:`vrp.data.scoring.canonical_answer`), as for self-consistency.

The clustering rule (Kuhn et al., Algorithm 1; lm-polygraph's ``SemanticEntropy``):

- Two answers are *equivalent* when each entails the other (bidirectional entailment), as
  judged given the question: premise and hypothesis are :func:`nli_text` of the question and
  each answer. Identical strings are equivalent without asking the judge.
- Greedy assignment in sample order: the first answer opens cluster 0; each later answer joins
  the first existing cluster whose *representative* (its first member) it is equivalent to,
  else it opens a new cluster. Equivalence judged by a classifier need not be transitive, so
  the clusters depend on the order; the sample order is fixed by the seeds.

The entropy is over the clusters' *frequencies* (the "discrete" semantic entropy of Farquhar
et al. 2024): ``p_c = |c| / K``, ``SE = -sum_c p_c log p_c``. Kuhn et al. and lm-polygraph sum
the samples' sequence probabilities per cluster instead; a run does not record the samples'
log-probabilities, and the frequency estimator needs none. With the canonical answers as
clusters the two signals equal ``answer_entropy`` and ``self_consistency``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

import numpy as np

Entails = Callable[[str, str], bool]  # (premise answer, hypothesis answer) -> premise entails hypothesis
EntailsBatch = Callable[[Sequence[tuple[str, str]]], Sequence[bool]]  # (premise, hypothesis) texts -> entailment


def nli_text(question: str, answer: str) -> str:
    """The text the NLI judge reads for one answer: ``f"{question} {answer}"`` (Kuhn et al.'s
    question-plus-answer), the premise or the hypothesis of a pair."""
    return f"{question} {answer}"


def equivalent(a: str, b: str, entails: Entails) -> bool:
    """Bidirectional entailment: ``a`` entails ``b`` and ``b`` entails ``a`` (identical: True)."""
    return a == b or (bool(entails(a, b)) and bool(entails(b, a)))


def cluster_by_entailment(answers: Sequence[str], entails: Entails) -> list[int]:
    """Greedy clustering of ``answers`` by bidirectional entailment.

    Args:
        answers: the K sampled answers, in sample order.
        entails: ``entails(a, b)`` is True when answer ``a`` entails answer ``b`` (the question
            is the callable's business: see :func:`cluster_batch`).

    Returns:
        ``[K]`` cluster labels 0, 1, ... in order of first appearance; each answer is compared
        with the first member of each existing cluster.
    """
    reps: list[str] = []
    labels: list[int] = []
    for a in answers:
        label = next((c for c, r in enumerate(reps) if equivalent(r, a, entails)), None)
        if label is None:
            label = len(reps)
            reps.append(a)
        labels.append(label)
    return labels


def entailment_pairs(question: str, answers: Sequence[str]) -> list[tuple[str, str]]:
    """Every ``(premise, hypothesis)`` text pair the greedy clustering of ``answers`` may ask
    about: both orders of each pair of distinct answers, as :func:`nli_text` of the question."""
    uniq = list(dict.fromkeys(answers))
    texts = [nli_text(question, a) for a in uniq]
    return [(texts[i], texts[j]) for i in range(len(uniq)) for j in range(len(uniq)) if i != j]


def cluster_batch(
    questions: Sequence[str], answers: Sequence[Sequence[str]], entails_batch: EntailsBatch
) -> list[list[int]]:
    """Cluster the samples of several items with one call of a batched entailment judge.

    Args:
        questions: each item's question.
        answers: each item's K sampled answers.
        entails_batch: maps a list of ``(premise, hypothesis)`` texts to one bool each
            (premise entails hypothesis), e.g. :meth:`vrp.models.nli.NLIModel.entails`.

    Returns:
        Each item's cluster labels (:func:`cluster_by_entailment`).
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answer lists")
    pairs = list(dict.fromkeys(p for q, a in zip(questions, answers, strict=True) for p in entailment_pairs(q, a)))
    verdicts = list(entails_batch(pairs)) if pairs else []
    if len(verdicts) != len(pairs):
        raise ValueError(f"the entailment judge returned {len(verdicts)} verdicts for {len(pairs)} pairs")
    table = dict(zip(pairs, (bool(v) for v in verdicts), strict=True))
    return [
        cluster_by_entailment(a, lambda x, y, q=q: table[(nli_text(q, x), nli_text(q, y))])
        for q, a in zip(questions, answers, strict=True)
    ]


def _frequencies(labels: Sequence[Hashable]) -> np.ndarray | None:
    if len(labels) == 0:
        return None
    counts = np.asarray(list(Counter(labels).values()), dtype=np.float64)
    return counts / counts.sum()


def semantic_entropy(labels: Sequence[Hashable]) -> float:
    """Entropy (nats) of the cluster frequencies, in [0, log K]: 0 when all K samples share a
    cluster, log K when all differ; NaN without samples.

    Args:
        labels: one cluster label per sample (any hashable values: cluster ids, canonical answers).
    """
    p = _frequencies(labels)
    return math.nan if p is None else float(-(p * np.log(p)).sum() + 0.0)  # + 0.0: no "-0.0"


def semantic_consistency(labels: Sequence[Hashable]) -> float:
    """Size of the largest cluster / K, in [1/K, 1]; NaN without samples."""
    p = _frequencies(labels)
    return math.nan if p is None else float(p.max())
