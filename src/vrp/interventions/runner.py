"""Re-answer a run's items under interventions, paired with a clean pass on the same items.

The clean pass and every condition go through the same code (the capture engine's greedy
``generate`` with the run's prompt, answer length and scoring), so a difference between them
is the intervention's and nothing else's. Per condition, per item: the answer, its score and
the last-layer truth margin at the first answer step. Finished conditions are kept on disk
(``RUN_DIR/interventions/<experiment>/<condition>.parquet``) and reused when the same command
runs again, so an interrupted experiment resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.capture.records import decode_answer
from vrp.data.items import Item
from vrp.data.scoring import is_correct, score_generic
from vrp.interventions.config import InterveneConfig

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


@dataclass
class Batch:
    """A slice of the run's items, with what conditions need to transform or hook them."""

    index: list[int]  # positions in the experiment's item list
    items: list[Item]
    images: list  # clean PIL images
    prompts: list[str]
    adapter: object
    _grids: list | None = None

    def padded_grids(self) -> list:
        """Per row, the image grids in padded batch coordinates (as the capture engine encodes)."""
        if self._grids is None:
            enc = self.adapter.encode(self.images, self.prompts, padding_side="left")
            self._grids = self.adapter.image_grids(enc, [im.size for im in self.images])
        return self._grids


@dataclass
class Condition:
    """One intervened setting: a label, and how it changes a batch (hooks and/or images)."""

    label: str
    kind: str
    layer: int = -1
    control: bool = False
    context: Callable[[Batch], AbstractContextManager] = lambda b: nullcontext()
    images: Callable[[Batch], list] | None = None
    spec: dict = field(default_factory=dict)  # what defines it (units, cells' seed, ...): part of its cache key


@dataclass
class Answers:
    """Per item of the experiment: answer text, correctness, truth margin (nats)."""

    ids: list[str]
    text: list[str]
    correct: np.ndarray  # [n] bool
    margin: np.ndarray  # [n] float64

    def table(self) -> pa.Table:
        return pa.table({"id": self.ids, "text": self.text, "correct": self.correct, "margin": self.margin})

    @classmethod
    def from_table(cls, t: pa.Table) -> Answers:
        d = t.to_pydict()
        return cls(d["id"], d["text"], np.asarray(d["correct"], bool), np.asarray(d["margin"], np.float64))


def margin_of(logprobs: np.ndarray, refs: list[int]) -> float:
    """Truth margin from a first-step log-probability row: best reference minus best other token."""
    if not refs:
        return float("nan")
    lp = np.asarray(logprobs, dtype=np.float64)
    others = np.delete(lp, refs)
    return float(lp[refs].max() - others.max())


def iter_batches(adapter, items: list[Item], batch_size: int) -> Iterator[Batch]:
    from vrp.data.images import open_image

    for s in range(0, len(items), batch_size):
        its = items[s : s + batch_size]
        yield Batch(list(range(s, s + len(its))), its, [open_image(it.image) for it in its],
                    [adapter.prompt(it.question) for it in its], adapter)  # fmt: skip


def score(adapter, item: Item, cap) -> tuple[str, bool, float]:
    """One captured answer -> (text, correct, truth margin at the first answer step)."""
    from vrp.capture.lens import reference_ids

    text = decode_answer(adapter.tokenizer, cap.answer_ids, adapter.stop_token_ids)
    margin = margin_of(cap.logprobs[0], reference_ids(adapter.tokenizer, item.answers))
    return text, is_correct(score_generic(item.task, text, item.answers)), margin


def answer(adapter, items: list[Item], cond: Condition, max_new_tokens: int, batch_size: int,
           tick: Callable[[int], None] | None = None) -> Answers:  # fmt: skip
    """Greedy answers of ``items`` under ``cond`` (the capture engine's generate, nothing recorded)."""
    from vrp.capture.engine import CaptureConfig, capture_generate

    cfg = CaptureConfig(attention=False, residuals=False, writes=False, max_new_tokens=max_new_tokens)
    texts, correct, margin = [], [], []
    for batch in iter_batches(adapter, items, batch_size):
        images = cond.images(batch) if cond.images else batch.images
        with cond.context(batch):
            caps = capture_generate(adapter, images, batch.prompts, cfg)
        for it, cap in zip(batch.items, caps, strict=True):
            text, ok, m = score(adapter, it, cap)
            texts.append(text)
            correct.append(ok)
            margin.append(m)
        if tick:
            tick(len(batch.items))
    return Answers([it.id for it in items], texts, np.asarray(correct, bool), np.asarray(margin, np.float64))


def condition_key(exp_cfg: InterveneConfig, cond: Condition, run_identity: dict) -> str:
    """A hash of everything that determines a condition's answers (for reuse on resume)."""
    blob = json.dumps({"run": run_identity, "cond": [cond.label, cond.kind, cond.layer, cond.spec],
                       "limit": exp_cfg.limit, "seed": exp_cfg.seed}, sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def slug(label: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in label.lower())
    return "-".join(p for p in keep.split("-") if p)


def cached_answers(path: Path, key: str, n: int) -> Answers | None:
    if not path.is_file():
        return None
    try:
        t = pq.read_table(path)
    except Exception as e:  # a torn file from a kill: recompute it
        log.warning("ignoring unreadable %s (%s); recomputing", path, e)
        return None
    meta = t.schema.metadata or {}
    if meta.get(b"vrp_key", b"").decode() != key or t.num_rows != n:
        return None
    return Answers.from_table(t)


def save_answers(path: Path, key: str, label: str, ans: Answers) -> None:
    from vrp.runs.rundir import write_table

    t = ans.table()
    t = t.replace_schema_metadata({"vrp_key": key, "vrp_label": label})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(path, t)
