"""Shared input handling and result plumbing for ``vrp.stats`` (private).

Conventions used by every statistic in this package:

* A wrong call (arrays of different lengths, labels that are not 0/1, an unknown method)
  is a programming error and raises ``ValueError``.
* Degenerate *data* (no usable item, one class, a constant signal) is not an error: the
  result carries ``undefined`` = a human-readable reason and NaN in its numeric fields.
* Items whose score is NaN or infinite, or whose label is missing (NaN / None), are dropped
  and counted in ``n_dropped``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

NAN = math.nan


class Result:
    """Mixin for the frozen result dataclasses: ``to_dict`` with plain Python values."""

    def to_dict(self) -> dict:
        """Fields as a dict of Python scalars, lists (arrays) and strings; NaN stays ``float('nan')``."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            out[f.name] = v
        return out


def frozen_array(x: ArrayLike, dtype=float) -> np.ndarray:
    """A read-only copy (results are frozen, so are their arrays)."""
    a = np.array(x, dtype=dtype)
    a.setflags(write=False)
    return a


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def as_labels(labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels -> (``y`` bool [n], ``present`` bool [n]); NaN / None mark a missing label.

    Raises:
        ValueError: labels not 1-D, or a present label other than 0/1/True/False.
    """
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if raw.dtype == bool:
        return raw.copy(), np.ones(raw.shape, bool)
    try:
        y = np.asarray(labels, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"labels must be bool or 0/1, got dtype {raw.dtype}") from e
    present = ~np.isnan(y)
    bad = present & (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(
            f"labels must be bool or 0/1 (NaN = missing), got {y[bad][0]!r} at index {np.flatnonzero(bad)[0]}"
        )
    return y == 1, present


@dataclass(frozen=True)
class Prepared:
    """Clean inputs: ``scores`` [k, n] all finite, ``y`` [n] bool, plus what was dropped."""

    scores: np.ndarray  # [k, n] float64, finite
    y: np.ndarray  # [n] bool
    n_total: int
    n_dropped: int
    undefined: str | None  # only "no usable item" reasons; class / constancy checks are separate

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())


def prepare(signals: Sequence[ArrayLike], labels: ArrayLike, names: Sequence[str] | None = None) -> Prepared:
    """Validate shapes and drop items with a non-finite score (in any signal) or a missing label.

    Args:
        signals: one or more 1-D score arrays, all as long as ``labels``.
        labels: bool or 0/1 labels; NaN / None = missing.
        names: names of the signals for error messages (default "scores").

    Returns:
        A ``Prepared``; its ``undefined`` is set when no item survives.
    """
    y, present = as_labels(labels)
    names = list(names) if names is not None else ["scores"] * len(signals)
    rows = []
    for name, s in zip(names, signals, strict=True):
        try:
            a = np.asarray(s, dtype=float)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric") from e
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if a.size != y.size:
            raise ValueError(f"{name} has {a.size} items but labels has {y.size}")
        rows.append(a)
    x = np.stack(rows) if rows else np.empty((0, y.size))  # [k, n]
    finite = np.isfinite(x).all(axis=0)
    keep = finite & present
    n_total, n_keep = int(y.size), int(keep.sum())
    reason = None
    if n_total == 0:
        reason = "no items"
    elif n_keep == 0:
        if not finite.any():
            reason = f"no finite values (all {n_total} scores are NaN or infinite)"
        elif not present.any():
            reason = f"no labels (all {n_total} labels are missing)"
        else:
            reason = f"no item among {n_total} has both a finite score and a label"
    return Prepared(x[:, keep], y[keep], n_total, n_total - n_keep, reason)


def dropped_note(p: Prepared) -> str:
    return f" after dropping {p.n_dropped} with a non-finite score or missing label" if p.n_dropped else ""


def one_class_reason(p: Prepared) -> str | None:
    """Reason string when all kept labels are equal, else None (labels are ``correct``)."""
    if p.n and p.n_pos in (0, p.n):
        which = "correct" if p.n_pos else "incorrect"
        return f"only one class among {p.n} items (all {which}){dropped_note(p)}"
    return None


def constant_reason(p: Prepared, names: Sequence[str] | None = None) -> str | None:
    """Reason string when some signal takes a single value over the kept items, else None."""
    for i, s in enumerate(p.scores):
        if s.size and s.min() == s.max():
            label = "signal" if names is None else f"signal {names[i]}"
            return f"{label} is constant (all {s.size} scores are {s[0]:.6g})"
    return None
