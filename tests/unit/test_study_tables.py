"""The study's choice of the best attention summary, on a crafted run (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vrp.study.tables import StudyRun, best_attention


def _run(columns: dict[str, np.ndarray], y: np.ndarray) -> StudyRun:
    ids = [f"i{k}" for k in range(len(y))]
    items = pd.DataFrame({"id": ids, "correct": y.astype(bool), **columns})
    preds = pd.DataFrame({"id": ids, "split": "val"})
    return StudyRun("toy", "data", Path("run"), {}, items, probes={"probes": {}}, predictions=preds)


def test_best_attention_never_picks_the_supervised_heads_summary():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 50)
    noisy = y + rng.normal(0, 1.0, y.size)  # predictive, imperfectly
    run = _run({"attn_peakiness_sup": y + 0.01 * rng.normal(size=y.size), "attn_peakiness_unsup": noisy}, y)
    assert best_attention(run) == ("attn_peakiness_unsup", 1.0)
    # a lower-is-reliable signal keeps its documented orientation
    run = _run({"attn_entropy_sup": -y.astype(float), "attn_entropy_unsup": -noisy}, y)
    assert best_attention(run) == ("attn_entropy_unsup", -1.0)
    assert best_attention(_run({"attn_entropy_sup": -y.astype(float)}, y)) is None
