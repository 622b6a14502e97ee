"""Which decoder attention heads a checkpoint's training supervised: the record beside its weights.

The toy VLMs (``vrp world train``) are trained with an auxiliary loss that points chosen heads of
one decoder block at the objects a question names (:class:`vrp.toys.supervision.AttentionSupervisor`).
Their attention there is trained, not emergent, which is exactly what the structural signals
measure. A checkpoint records those heads in ``attention_supervision.json``::

    {"format": "vrp-attention-supervision/1",
     "supervised_heads": [[2, 0], [2, 1]],          # (decoder block, query head), sorted
     "by_task": {"spatial": [[2, 0], [2, 1]], ...},  # which questions pushed which heads
     "weight": 1.0}

Blocks are decoder blocks (``blocks.{l}``, 0-based, as the ``[L, H]`` per-head curves); heads
are query heads (a GQA / MQA model's supervised query heads may share a key head). A model
without the file (every hub checkpoint) records no supervision: its supervised set is empty.
"""

from __future__ import annotations

import json
from pathlib import Path

FILE = "attention_supervision.json"
FORMAT = "vrp-attention-supervision/1"
Heads = tuple[tuple[int, int], ...]


def _heads(value, where: str) -> Heads:
    try:
        pairs = {(int(b), int(h)) for b, h in value}
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a list of [block, head] pairs, got {value!r}") from None
    if any(b < 0 or h < 0 for b, h in pairs):
        raise ValueError(f"{where}: blocks and heads are 0-based indices, got {sorted(pairs)}")
    return tuple(sorted(pairs))


def supervision_record(by_task: dict[str, Heads], weight: float) -> dict:
    """The JSON record of a training run that supervised ``by_task`` (task -> heads) at ``weight``."""
    tasks = {t: [list(p) for p in _heads(h, f"task {t}")] for t, h in sorted(by_task.items())}
    union = sorted({tuple(p) for h in tasks.values() for p in h})
    return {"format": FORMAT, "supervised_heads": [list(p) for p in union], "by_task": tasks, "weight": weight}


def write_supervision(model_dir: str | Path, record: dict) -> Path:
    """Write ``record`` (:func:`supervision_record`) as ``model_dir/attention_supervision.json``."""
    path = Path(model_dir) / FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_supervised_heads(model_dir: str | Path) -> Heads:
    """The ``(block, head)`` pairs the checkpoint in ``model_dir`` was trained to attend with.

    Returns:
        The sorted pairs; ``()`` when the folder holds no record (a hub model, or a path that is
        not a local folder).

    Raises:
        ValueError: the record exists but is not a supervision record of this format.
    """
    path = Path(model_dir) / FILE
    if not path.is_file():
        return ()
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "supervised_heads" not in doc:
        raise ValueError(f"{path} is not an attention-supervision record of format {FORMAT!r}")
    return _heads(doc["supervised_heads"], str(path))
