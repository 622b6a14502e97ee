"""Symbolic detachment (the paper's §5.6 and Appendix E): attention on the queried object, answer wrong; or the reverse.

Two groups of items with a gold region (the boxes of the objects the question is about):

* **attended yet wrong** (``focused_wrong``): the attention is "textbook-perfect" on the gold region, and the answer
  is wrong. An item is *focused* when, at the block read (default: the last block, the ``attn_*`` columns of
  ``items.parquet``), all of these hold:

  - its region ratio (region mass / region area share) is at least the ``focus_quantile`` (0.9: the top decile) of
    the region ratios of the run's items with a region;
  - its top-rho set is one contiguous blob: at most ``max_secondary`` (0) secondary components;
  - its spatial entropy is at most the ``entropy_quantile`` (0.5: the median) of the same items' entropies;
  - the most attended patch is inside the region (``require_hit``).

* **missed yet right** (``missed_right``): the attention misses the region, and the answer is right. An item
  *misses* when (``miss_rule``) its most attended patch is outside the region (``argmax``), its region ratio is at
  most the ``miss_quantile`` (0.1: the bottom decile) of the run's ratios (``ratio``), ``either`` of the two, or
  ``both`` (the default: on small grids the argmax alone misses most regions, e.g. 70% of a toy run's items).

The quantiles are the run's own (numpy's linear interpolation over every item with a finite region ratio, all tasks
together), so "top decile" means relative to what this model does on this data. Per task (and for all tasks), the
counts and rates with 95% Wilson intervals: the share of the wrong answers that were attended-yet-wrong (the
paper's "in X% of failure cases attention is textbook-perfect"), the share of the right answers that were
missed-yet-right, and the accuracy among focused, missed and all region items (if attention were trust, the first
would be far above the second).

``vrp analyze`` writes ``RUN_DIR/analysis/detachment.json`` with the default thresholds; call
:func:`write_detachment` with another :class:`DetachmentConfig` to choose them. Runs without gold regions get
``{"available": false, "reason": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from vrp.config import Config

if TYPE_CHECKING:
    import pandas as pd

DETACHMENT_JSON = "detachment.json"
COLUMNS = ("attn_region_ratio", "attn_pointing_hit", "attn_secondary", "attn_entropy")  # what the selection reads


@dataclass(frozen=True)
class DetachmentConfig(Config):
    """Thresholds of the symbolic-detachment selection.

    Attributes:
        focus_quantile: a focused item's region ratio is at least this quantile of the run's region ratios.
        max_secondary: a focused item has at most this many secondary components (0 = one contiguous focus).
        entropy_quantile: a focused item's spatial entropy is at most this quantile of the run's entropies.
        require_hit: a focused item's most attended patch is inside the gold region.
        miss_quantile: the ratio rule of a missed item: region ratio at most this quantile of the run's ratios.
        miss_rule: which rule makes an item missed: argmax (most attended patch outside the region), ratio,
            either, or both.
        block: decoder block read (negative counts from the end); None = the last block (items.parquet's
            attn_* columns), otherwise the stored per-block curves.
    """

    focus_quantile: float = 0.9
    max_secondary: int = 0
    entropy_quantile: float = 0.5
    require_hit: bool = True
    miss_quantile: float = 0.1
    miss_rule: Literal["argmax", "ratio", "either", "both"] = "both"
    block: int | None = None

    def check(self) -> None:
        self.require(
            *((0 <= getattr(self, n) <= 1, f"{n} must be in [0, 1], got {getattr(self, n)}")
              for n in ("focus_quantile", "entropy_quantile", "miss_quantile")),
            (self.max_secondary >= 0, f"max_secondary must be >= 0, got {self.max_secondary}"),
        )  # fmt: skip


def thresholds(df: pd.DataFrame, cfg: DetachmentConfig) -> dict[str, float]:
    """The run's cutoffs over the items with a finite region ratio: ``focus_ratio``, ``miss_ratio``, ``max_entropy``
    (NaN when no item has a region)."""
    ratio = df["attn_region_ratio"].to_numpy(np.float64)
    region = np.isfinite(ratio)
    entropy = df["attn_entropy"].to_numpy(np.float64)[region]
    entropy = entropy[np.isfinite(entropy)]

    def q(x: np.ndarray, p: float) -> float:
        return float(np.quantile(x, p)) if x.size else float("nan")

    return {"focus_ratio": q(ratio[region], cfg.focus_quantile), "miss_ratio": q(ratio[region], cfg.miss_quantile),
            "max_entropy": q(entropy, cfg.entropy_quantile)}  # fmt: skip


def select(df: pd.DataFrame, cfg: DetachmentConfig | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(focused [n] bool, missed [n] bool, the cutoffs) of the items of ``df`` (columns :data:`COLUMNS`).

    Items without a finite region ratio are neither; a focused item needs finite entropy and components too.
    """
    cfg = cfg or DetachmentConfig()
    t = thresholds(df, cfg)
    ratio, hit, secondary, entropy = (df[c].to_numpy(np.float64) for c in COLUMNS)
    region = np.isfinite(ratio)
    with np.errstate(invalid="ignore"):
        focused = (
            region & (ratio >= t["focus_ratio"]) & (secondary <= cfg.max_secondary) & (entropy <= t["max_entropy"])
        )
        if cfg.require_hit:
            focused &= hit == 1
        by_ratio = region & (ratio <= t["miss_ratio"])
        by_argmax = region & (hit == 0)
    missed = {"ratio": by_ratio, "argmax": by_argmax, "either": by_ratio | by_argmax, "both": by_ratio & by_argmax}
    return focused, missed[cfg.miss_rule], t


def _rate(k: int, n: int, level: float) -> dict:
    from vrp.stats.intervals import wilson_ci

    lo, hi = wilson_ci(k, n, level)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi}


def rates(df: pd.DataFrame, focused: np.ndarray, missed: np.ndarray, level: float = 0.95) -> list[dict]:
    """Per task (in order of appearance) and for ``"all"``: counts of region, focused and missed items, the two
    groups, and their rates with Wilson CIs (tasks without a region item are left out)."""
    correct = df["correct"].to_numpy().astype(bool)
    region = np.isfinite(df["attn_region_ratio"].to_numpy(np.float64))
    tasks = df["task"].to_numpy()
    rows = []
    for task in ["all", *dict.fromkeys(tasks[region])]:
        m = region & (tasks == task if task != "all" else True)
        n, f, s = int(m.sum()), focused & m, missed & m
        rows.append({
            "task": str(task), "n_region": n, "n_wrong": int((m & ~correct).sum()), "n_right": int((m & correct).sum()),
            "n_focused": int(f.sum()), "n_missed": int(s.sum()),
            "focused_wrong": _rate(int((f & ~correct).sum()), int((m & ~correct).sum()), level),  # of the wrong
            "missed_right": _rate(int((s & correct).sum()), int((m & correct).sum()), level),  # of the right
            "accuracy_focused": _rate(int((f & correct).sum()), int(f.sum()), level),
            "accuracy_missed": _rate(int((s & correct).sum()), int(s.sum()), level),
            "accuracy_region": _rate(int((m & correct).sum()), n, level),
        })  # fmt: skip
    return rows


def _at_block(run_dir: Path, items: pd.DataFrame, block: int) -> pd.DataFrame:
    """``items`` with :data:`COLUMNS` replaced by the stored curves' values at decoder ``block``."""
    from vrp.runs import storage

    out = items.copy()
    for col in COLUMNS:
        ids, curve = storage.load_stacked(run_dir, f"curve.{col}")  # [n, L] over every decoder block
        b = block + curve.shape[1] if block < 0 else block
        if not 0 <= b < curve.shape[1]:
            raise ValueError(f"block {block} is outside the run's {curve.shape[1]} decoder blocks")
        values = dict(zip(ids, curve[:, b].astype(np.float64), strict=True))
        out[col] = [values.get(i, np.nan) for i in out["id"]]
    return out


def detachment(run_dir: Path, cfg: DetachmentConfig | None = None, level: float = 0.95) -> dict:
    """The detachment view of a run: settings, cutoffs, per-task rates and the two groups' ids (most extreme
    first: attended-yet-wrong by decreasing region ratio, missed-yet-right by increasing ratio)."""
    import pyarrow.parquet as pq

    cfg = cfg or DetachmentConfig()
    run_dir = Path(run_dir)
    items = pq.read_table(run_dir / "items.parquet").to_pandas()
    head = {"config": cfg.to_dict(), "block": "last" if cfg.block is None else cfg.block, "level": level}
    absent = [c for c in COLUMNS if c not in items]
    if absent:
        return {**head, "available": False, "reason": f"items.parquet has no {', '.join(absent)} column"}
    if cfg.block is not None:
        items = _at_block(run_dir, items, cfg.block)
    if not np.isfinite(items["attn_region_ratio"].to_numpy(np.float64)).any():
        return {**head, "available": False, "reason": "no item has a gold region (the attn_region_* signals are NaN)"}
    focused, missed, cut = select(items, cfg)
    ratio = items["attn_region_ratio"].to_numpy(np.float64)
    correct = items["correct"].to_numpy().astype(bool)
    ids = items["id"].to_numpy()

    def ordered(mask: np.ndarray, descending: bool) -> list[str]:
        idx = np.flatnonzero(mask)
        order = np.argsort(-ratio[idx] if descending else ratio[idx], kind="stable")
        return [str(i) for i in ids[idx[order]]]

    return {**head, "available": True, "thresholds": cut, "rows": rates(items, focused, missed, level),
            "ids": {"focused_wrong": ordered(focused & ~correct, True), "missed_right": ordered(missed & correct, False)}}  # fmt: skip


def write_detachment(run_dir: Path, cfg: DetachmentConfig | None = None, level: float = 0.95) -> dict:
    """Write ``analysis/detachment.json``; returns the short entry for ``analysis/summary.json``."""
    from vrp.runs.rundir import atomic_write_json

    run_dir = Path(run_dir)
    view = detachment(run_dir, cfg, level)
    (run_dir / "analysis").mkdir(exist_ok=True)
    atomic_write_json(run_dir / "analysis" / DETACHMENT_JSON, view)
    if not view["available"]:
        return {"available": False, "reason": view["reason"]}
    overall = view["rows"][0]
    return {"available": True, "n_region": overall["n_region"], "focused_wrong": overall["focused_wrong"],
            "missed_right": overall["missed_right"]}  # fmt: skip


def describe(entry: dict) -> str:
    """One line for the console."""
    if not entry.get("available"):
        return f"symbolic detachment: {entry.get('reason', 'not available')}"
    fw, mr = entry["focused_wrong"], entry["missed_right"]
    return (f"symbolic detachment ({entry['n_region']} items with a gold region): attended yet wrong {fw['k']} of "
            f"{fw['n']} wrong answers ({fw['rate']:.1%}), missed yet right {mr['k']} of {mr['n']} right answers "
            f"({mr['rate']:.1%}) (analysis/detachment.json)")  # fmt: skip
