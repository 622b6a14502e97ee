"""The structural signals over the supervised and the unsupervised attention heads (part of
``vrp analyze``): the attention-supervision confound, measured.

The shipped toys were trained with an auxiliary loss that points chosen heads of decoder block
2 at the objects a question names (``attention_supervision.json``, :mod:`vrp.models.supervision`),
so their attention there is trained, not emergent. This module splits the heads in two by the
record the run's manifest keeps (``model.supervised_heads``) and writes
``RUN_DIR/analysis/head_groups.parquet``: ``id`` and, for each per-head feature of
:data:`vrp.analysis.heads.HEAD_FEATURES`,

    attn_<feature>_unsup    the mean of the per-head feature (``curve.head_attn_<feature>``,
                            ``[n, L, H]``) over every (block, head) that was NOT supervised
    attn_<feature>_sup      the same over the supervised heads only

The mean ignores NaN cells (blocks without attention). Like the ``dla<k>`` signals, a group's
feature is the mean of its heads' own features, not the feature of their averaged map.

A model that records no supervision (every hub model; ``supervised_heads: []``) has every head
unsupervised: its ``_unsup`` columns are the all-heads mean of the per-head features (defined,
so one predictor table reads the same for toys and real models), and its ``_sup`` columns are
NaN (the predictor table's row is undefined: no supervised head). A run whose manifest has no
``supervised_heads`` (made before the record existed) gets no columns: which heads were trained
is unknown there, and guessing "none" would be wrong for a toy.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from vrp.analysis.heads import HEAD_FEATURES, head_features
from vrp.signals.catalog import DERIVED

log = logging.getLogger(__name__)
SOURCE = "analysis/head_groups.parquet"
GROUPS = ("unsup", "sup")


def supervised_mask(shape: tuple[int, int], supervised) -> np.ndarray:
    """``[L, H]`` True at the supervised ``(block, head)`` pairs.

    Raises:
        ValueError: a recorded pair lies outside the model's ``L`` blocks and ``H`` heads.
    """
    mask = np.zeros(shape, dtype=bool)
    for b, h in supervised:
        if not (0 <= b < shape[0] and 0 <= h < shape[1]):
            raise ValueError(f"supervised head (block {b}, head {h}) outside the stored [L, H] = {list(shape)} curves")
        mask[b, h] = True
    return mask


def group_means(features: dict[str, np.ndarray], supervised) -> dict[str, np.ndarray]:
    """``attn_<feature>_unsup`` and ``attn_<feature>_sup`` per item.

    Args:
        features: per-head feature name -> ``[n, L, H]``.
        supervised: the supervised ``(block, head)`` pairs (empty: every head is unsupervised and
            the ``_sup`` values are NaN).

    Returns:
        name -> ``[n]``: the mean over the group's cells, NaN cells ignored (NaN where all are).
    """
    out = {}
    for name, f in features.items():
        sup = supervised_mask(f.shape[1:], supervised)
        for group, cells in (("unsup", ~sup), ("sup", sup)):
            vals = f[:, cells]  # [n, cells]
            if vals.shape[1] == 0:
                out[f"attn_{name}_{group}"] = np.full(len(f), np.nan)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an item with every cell NaN: NaN
                out[f"attn_{name}_{group}"] = np.nanmean(vals, axis=1)
    return out


def recorded_supervision(run_dir: Path) -> tuple[tuple[int, int], ...] | None:
    """The run's ``model.supervised_heads`` (manifest), or None for a run made before the record."""
    model = json.loads((Path(run_dir) / "manifest.json").read_text()).get("model", {})
    if "supervised_heads" not in model:
        return None
    return tuple(sorted((int(b), int(h)) for b, h in model["supervised_heads"]))


def write_head_groups(run_dir: Path) -> dict | None:
    """Write ``analysis/head_groups.parquet``; return ``{"supervised_heads", "columns"}``, or None
    (logged) for a run without per-head curves or without the manifest's record."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vrp.runs.rundir import write_table

    run_dir = Path(run_dir)
    supervised = recorded_supervision(run_dir)
    if supervised is None:
        log.info("%s: the manifest records no supervised heads (a run made before the record): no head groups", run_dir)
        return None
    ids = pq.read_table(run_dir / "items.parquet", columns=["id"]).column("id").to_pylist()
    feats = head_features(run_dir, ids)
    if feats is None:
        log.info("%s stores no per-head curves: no head groups", run_dir)
        return None
    values = group_means({f: feats[f] for f in HEAD_FEATURES}, supervised)
    names = [d.name for d in DERIVED if d.source == SOURCE]
    (run_dir / SOURCE).parent.mkdir(exist_ok=True)
    write_table(run_dir / SOURCE, pa.Table.from_pandas(pd.DataFrame({"id": ids, **{n: values[n] for n in names}}),
                                                       preserve_index=False))  # fmt: skip
    return {"supervised_heads": [list(p) for p in supervised], "columns": names}
