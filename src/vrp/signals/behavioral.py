"""Behavioral signals (SPEC §5): agreement of sampled answers and the model's own token
probabilities. Pure functions over plain arrays and labels; no model code.

Self-consistency and answer entropy take the canonical answers of the K samples
(:func:`vrp.data.scoring.canonical_answer`). ``None`` (an answer the benchmark's rule cannot
read, e.g. no yes/no word on a yes/no task) is one cluster like any other label: K
unreadable answers agree with each other (S_SC = 1), because the model consistently gave
no usable answer, and a mix of readable and unreadable answers is disagreement.

The token signals take one answer's log-probabilities ``[T, V]`` (T decoding steps over a
vocabulary of V, natural log, as :class:`vrp.capture.records.ItemCapture` stores them) and
its emitted token ids ``[T]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def _cluster_counts(canonical_answers: Sequence[Hashable | None]) -> np.ndarray:
    if len(canonical_answers) == 0:
        raise ValueError("need at least one sampled answer")
    return np.asarray(list(Counter(canonical_answers).values()), dtype=np.float64)


def self_consistency(canonical_answers: Sequence[str | None]) -> float:
    """S_SC = (size of the largest cluster of equal canonical answers) / K, in [1/K, 1].

    Args:
        canonical_answers: the K samples' canonical answers; ``None`` is its own cluster.
    """
    counts = _cluster_counts(canonical_answers)
    return float(counts.max() / counts.sum())


def answer_entropy(canonical_answers: Sequence[str | None]) -> float:
    """Entropy (nats) of the empirical distribution over canonical-answer clusters, in
    [0, log K]: 0 when all K samples agree, log K when all differ."""
    counts = _cluster_counts(canonical_answers)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() + 0.0)  # + 0.0: no "-0.0"


def _check(logprobs: np.ndarray, answer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lp = np.asarray(logprobs, dtype=np.float64)
    ids = np.asarray(answer_ids, dtype=np.int64)
    if lp.ndim != 2 or ids.ndim != 1 or lp.shape[0] != ids.shape[0]:
        raise ValueError(f"expected logprobs [T, V] and answer_ids [T], got {lp.shape} and {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= lp.shape[1]):
        raise ValueError(f"answer ids must index the vocabulary of {lp.shape[1]}")
    return lp, ids


def emitted_logprobs(logprobs: np.ndarray, answer_ids: np.ndarray) -> np.ndarray:
    """log p of each emitted token at its step: ``[T]``."""
    lp, ids = _check(logprobs, answer_ids)
    return lp[np.arange(ids.size), ids]


def token_confidence(logprobs: np.ndarray, answer_ids: np.ndarray) -> float:
    """Probability the model gave the first emitted answer token (NaN for an empty answer).

    Args:
        logprobs: ``[T, V]`` log-probabilities of the answer's decoding steps.
        answer_ids: ``[T]`` emitted token ids.
    """
    tok = emitted_logprobs(logprobs, answer_ids)
    return float(np.exp(tok[0])) if tok.size else float("nan")


def stop_index(answer_ids: np.ndarray, stop_ids: Sequence[int]) -> int:
    """Index of the first token of ``answer_ids`` that is in ``stop_ids`` (e.g. the EOS and
    newline tokens), or T if there is none: the ``stop`` of :func:`geometric_mean_prob`."""
    ids = np.asarray(answer_ids, dtype=np.int64)
    hit = np.flatnonzero(np.isin(ids, np.asarray(list(stop_ids), dtype=np.int64)))
    return int(hit[0]) if hit.size else int(ids.size)


def geometric_mean_prob(logprobs: np.ndarray, answer_ids: np.ndarray, stop: int | None = None) -> float:
    """Geometric mean of the emitted tokens' probabilities before step ``stop``:
    ``exp(mean_t log p_t)`` over ``t < stop`` (all T steps if ``stop`` is None).

    Args:
        logprobs: ``[T, V]`` log-probabilities of the answer's decoding steps.
        answer_ids: ``[T]`` emitted token ids.
        stop: index of the first token not to count (first newline or EOS, see
            :func:`stop_index`), in [0, T].

    Returns:
        The geometric mean in [0, 1]; NaN when no token is counted.
    """
    tok = emitted_logprobs(logprobs, answer_ids)
    if stop is not None:
        if not 0 <= stop <= tok.size:
            raise ValueError(f"stop must be in [0, {tok.size}], got {stop}")
        tok = tok[:stop]
    return float(np.exp(tok.mean())) if tok.size else float("nan")


def first_step_entropy(logprobs: np.ndarray) -> float:
    """Entropy (nats) of the first answer step's next-token distribution (NaN if T = 0).

    Args:
        logprobs: ``[T, V]`` log-probabilities; only row 0 is used.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"expected logprobs [T, V], got {lp.shape}")
    if lp.shape[0] == 0:
        return float("nan")
    p = np.exp(lp[0])
    safe = np.where(p > 0, lp[0], 0.0)  # 0 * log 0 = 0 (masked tokens carry -inf)
    return float(-(p * safe).sum() + 0.0)
