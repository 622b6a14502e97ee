"""Structural attention metrics over one image's patch grid (SPEC section 3).

Every function takes the maps of **one image**. Items with several images (possibly with different
grids) are handled by the caller, one image at a time. Inputs are numpy arrays; nothing here imports
a model, the capture code or torch.

The signal catalog (:mod:`vrp.signals.catalog`) composes these into the per-layer curves and
per-item signals ``vrp run`` stores (``attn_entropy``, ``attn_secondary``, ...); their units and
directions are listed there. Conventions: entropies in nats (higher = more diffuse); component
counts are reported minus one (0 = one contiguous focus); a gold-region mask marks the patches
of the queried object(s) (:func:`region_mask`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage
from sklearn.cluster import DBSCAN

from vrp.config import TraceConfig

Rule = Literal["mass", "patches"]
_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-neighbour adjacency


def _renormalize(m: np.ndarray, what: str) -> np.ndarray:
    """Divide each trailing [rows, cols] map by its total; raise on zero or non-finite mass."""
    total = m.sum(axis=(-2, -1), keepdims=True)
    if not np.all(np.isfinite(total)):
        raise ValueError(f"{what}: attention map contains non-finite values")
    if np.any(total <= 0):
        bad = np.argwhere(total[..., 0, 0] <= 0).tolist()
        raise ValueError(f"{what}: zero attention mass on the image at index {bad}; refusing a uniform fallback")
    return m / total


def _select_steps(image_attention: np.ndarray, steps: int | None) -> np.ndarray:
    a = np.asarray(image_attention, dtype=np.float64)
    if a.ndim != 5:
        raise ValueError(f"image_attention must be [L, H, T, rows, cols], got shape {a.shape}")
    t = a.shape[2]
    if steps is None:
        return a
    if not 1 <= steps <= t:
        raise ValueError(f"steps must be in [1, {t}], got {steps}")
    return a[:, :, :steps]


def answer_steps(n_content: int, n_steps: int) -> int:
    """The answer steps an item's attention maps average over: its tokens before EOS, at least
    1 (an empty answer still has its decision position), at most the ``n_steps`` recorded."""
    return max(1, min(n_content, n_steps))


def layer_maps(image_attention: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Per-layer attention distribution over the patch grid.

    Args:
        image_attention: ``[L, H, T, rows, cols]`` attention of each answer step to each image token.
        steps: use answer steps ``0 .. steps - 1``; default all.

    Returns:
        ``[L, rows, cols]`` maps (mean over heads and steps), each summing to 1.

    Raises:
        ValueError: a layer has zero (or non-finite) mass on the image.
    """
    a = _select_steps(image_attention, steps)
    return _renormalize(a.mean(axis=(1, 2)), "layer_maps")  # [L, rows, cols]


def head_maps(image_attention: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Per-head attention distribution: ``[L, H, rows, cols]``, mean over steps, each map summing to 1."""
    a = _select_steps(image_attention, steps)
    return _renormalize(a.mean(axis=2), "head_maps")  # [L, H, rows, cols]


def spatial_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last two axes, with ``0 log 0 = 0``; shape = leading dims."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 2:
        raise ValueError(f"expected [..., rows, cols], got shape {p.shape}")
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=(-2, -1))


def normalized_entropy(p: np.ndarray) -> np.ndarray:
    """Spatial entropy divided by ``log(rows * cols)``; 0 for a one-patch grid."""
    p = np.asarray(p, dtype=np.float64)
    h = spatial_entropy(p)
    n = p.shape[-2] * p.shape[-1]
    return np.zeros_like(h) if n == 1 else h / math.log(n)


def _check_2d(p2d: np.ndarray) -> np.ndarray:
    p = np.asarray(p2d, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected a [rows, cols] map, got shape {p.shape}")
    return p


def top_mass_mask(p2d: np.ndarray, rho: float = TraceConfig.rho, rule: Rule = "mass") -> np.ndarray:
    """Boolean ``[rows, cols]`` mask of the top patches.

    Args:
        p2d: ``[rows, cols]`` attention map (mass is taken relative to its total).
        rho: fraction in (0, 1].
        rule: ``"mass"`` keeps the smallest set of patches whose mass reaches ``rho`` of the total;
            ``"patches"`` keeps the top ``ceil(rho * n)`` patches by value (the reference code's rule).
            Ties are broken by flat (row-major) index, lowest first.
    """
    p = _check_2d(p2d)
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    if rule not in ("mass", "patches"):
        raise ValueError(f"rule must be 'mass' or 'patches', got {rule!r}")
    flat = p.ravel()
    order = np.argsort(-flat, kind="stable")  # descending, ties by flat index
    n = flat.size
    if rule == "mass":
        cum = np.cumsum(flat[order])
        if cum[-1] <= 0:
            raise ValueError("top_mass_mask: map has zero total mass")
        k = int(np.searchsorted(cum / cum[-1], rho - 1e-12, side="left")) + 1
    else:
        k = math.ceil(rho * n - 1e-9)
    k = min(max(k, 1), n)
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(p.shape)


def component_count(mask: np.ndarray) -> int:
    """Number of 4-neighbour connected components of a boolean ``[rows, cols]`` mask."""
    _, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_CROSS)
    return int(n)


def secondary_components(p2d: np.ndarray, rho: float = TraceConfig.rho, rule: Rule = "mass") -> int:
    """Components of the top-rho set minus one: 0 means one contiguous focus."""
    return component_count(top_mass_mask(p2d, rho, rule)) - 1


def top_mass_masks(p: np.ndarray, rho: float = TraceConfig.rho, rule: Rule = "mass") -> np.ndarray:
    """:func:`top_mass_mask` of every map of ``p`` ``[..., rows, cols]`` at once (same rule, same
    tie-breaking), as a boolean array of ``p``'s shape."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 2:
        raise ValueError(f"expected [..., rows, cols], got shape {p.shape}")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    if rule not in ("mass", "patches"):
        raise ValueError(f"rule must be 'mass' or 'patches', got {rule!r}")
    flat = p.reshape(-1, p.shape[-2] * p.shape[-1])  # [m, n]
    n = flat.shape[1]
    desc = -np.sort(-flat, axis=1)  # values, largest first (ties need no order here)
    if rule == "mass":
        cum = np.cumsum(desc, axis=1)
        if (cum[:, -1] <= 0).any():
            raise ValueError("top_mass_masks: a map has zero total mass")
        k = (cum / cum[:, -1:] < rho - 1e-12).sum(axis=1) + 1  # searchsorted(side="left") + 1, per row
    else:
        k = np.full(len(flat), math.ceil(rho * n - 1e-9))
    k = np.clip(k, 1, n)
    # the k-th largest value; patches above it are in, ties at it go in lowest flat index first
    v = np.take_along_axis(desc, (k - 1)[:, None], axis=1)  # [m, 1]
    above = flat > v
    tie = flat == v
    need = k[:, None] - above.sum(axis=1, keepdims=True)
    return (above | (tie & (np.cumsum(tie, axis=1) <= need))).reshape(p.shape)


def secondary_components_many(p: np.ndarray, rho: float = TraceConfig.rho, rule: Rule = "mass") -> np.ndarray:
    """:func:`secondary_components` of every map of ``p`` ``[..., rows, cols]``: one labelling of
    the stacked masks, components connected within a map only. Returns ``p.shape[:-2]`` ints."""
    masks = top_mass_masks(p, rho, rule)
    stack = masks.reshape(-1, *masks.shape[-2:])  # [m, rows, cols]
    within = np.zeros((3, 3, 3), dtype=bool)
    within[1] = _CROSS  # 4-neighbours in the map's plane, never across maps
    labels, n = ndimage.label(stack, structure=within)
    # labels are numbered in scan order, so each map's labels are one contiguous range
    first = np.where(stack.any(axis=(1, 2)), np.where(labels > 0, labels, n + 1).min(axis=(1, 2)), 0)
    last = labels.max(axis=(1, 2))
    counts = np.where(last > 0, last - first + 1, 0)
    return (counts - 1).reshape(masks.shape[:-2])


def dbscan_components(mask: np.ndarray, eps: float = 1.5, min_samples: int = 3) -> int:
    """DBSCAN clusters (noise excluded) on the (row, col) coordinates of the kept patches.

    Returns 0 when fewer than ``min_samples`` patches are kept.
    """
    coords = np.argwhere(np.asarray(mask, dtype=bool))  # [k, 2]
    if len(coords) < min_samples:
        return 0
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(coords).labels_
    return len(set(labels.tolist()) - {-1})


def peakiness(p2d: np.ndarray) -> float:
    """Largest patch probability."""
    return float(_check_2d(p2d).max())


def top_mass_area_fraction(p2d: np.ndarray, rho: float = TraceConfig.rho) -> float:
    """Fraction of patches in the smallest set holding ``rho`` of the mass ("mass" rule)."""
    m = top_mass_mask(p2d, rho, "mass")
    return float(m.sum() / m.size)


def entropy_delta(h_curve: np.ndarray) -> np.ndarray:
    """``H(l) - H(l - 1)`` per layer, NaN at layer 0."""
    h = np.asarray(h_curve, dtype=np.float64)
    out = np.full_like(h, np.nan)
    out[1:] = np.diff(h)
    return out


def region_mask(boxes: np.ndarray | list, grid_shape: tuple[int, int]) -> np.ndarray:
    """Patches covered by gold boxes.

    A patch is inside when at least half of its area is covered by the union of the boxes; the patch
    holding each box's centre is always inside, so a box smaller than a patch still has a region.

    Args:
        boxes: ``[K, 4]`` boxes ``[x0, y0, x1, y1]`` in normalized view coordinates (x = column axis).
        grid_shape: ``(rows, cols)``.

    Returns:
        Boolean ``[rows, cols]`` mask.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # [K, 4]
    rows, cols = grid_shape
    if len(b) == 0:
        raise ValueError("region_mask: no boxes given")
    if np.any((b < 0) | (b > 1)) or np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise ValueError(f"region_mask: boxes must be [x0, y0, x1, y1] in [0, 1] with x0 <= x1, y0 <= y1: {b}")
    # exact union area per patch by coordinate compression: elementary cells are wholly in or out
    xs = np.unique(np.concatenate([b[:, [0, 2]].ravel(), np.linspace(0, 1, cols + 1)]))
    ys = np.unique(np.concatenate([b[:, [1, 3]].ravel(), np.linspace(0, 1, rows + 1)]))
    xm, ym = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inx = (b[:, None, 0] <= xm) & (xm <= b[:, None, 2])  # [K, nx]
    iny = (b[:, None, 1] <= ym) & (ym <= b[:, None, 3])  # [K, ny]
    covered = (iny[:, :, None] & inx[:, None, :]).any(axis=0)  # [ny, nx]
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :] * covered
    ci = np.minimum((xm * cols).astype(int), cols - 1)
    ri = np.minimum((ym * rows).astype(int), rows - 1)
    cover = np.zeros((rows, cols))
    np.add.at(cover, (ri[:, None], ci[None, :]), area)
    mask = cover * rows * cols >= 0.5 - 1e-9
    cr = np.minimum(((b[:, 1] + b[:, 3]) / 2 * rows).astype(int), rows - 1)
    cc = np.minimum(((b[:, 0] + b[:, 2]) / 2 * cols).astype(int), cols - 1)
    mask[cr, cc] = True
    return mask


def _check_region(p2d: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, m = _check_2d(p2d), np.asarray(mask, dtype=bool)
    if p.shape != m.shape:
        raise ValueError(f"map shape {p.shape} != region mask shape {m.shape}")
    if not m.any():
        raise ValueError("region mask is empty")
    if p.sum() <= 0:
        raise ValueError("map has zero total mass")
    return p, m


def region_mass(p2d: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside the region mask."""
    p, m = _check_region(p2d, mask)
    return float(p[m].sum() / p.sum())


def region_mass_ratio(p2d: np.ndarray, mask: np.ndarray) -> float:
    """Region mass divided by the region's area share (1 = chance level)."""
    p, m = _check_region(p2d, mask)
    return region_mass(p, m) / (m.sum() / m.size)


def pointing_hit(p2d: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the argmax patch (first in flat order on ties) lies inside the region."""
    p, m = _check_region(p2d, mask)
    return bool(m.ravel()[int(np.argmax(p))])
