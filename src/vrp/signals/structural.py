"""Structural attention metrics over one image's patch grid (SPEC section 3).

Every function takes the maps of **one image**. Items with several images (possibly with different
grids) are handled by the caller, one image at a time. Inputs are numpy arrays; nothing here imports
a model, the capture code or torch.

Keys returned by :func:`structural_curves` (one float per layer):

- ``entropy``: spatial entropy ``H_s`` in nats. Higher = more diffuse (less focused).
- ``entropy_norm``: ``H_s / log(rows * cols)`` in [0, 1]. Higher = less focused.
- ``entropy_delta``: ``H_s(l) - H_s(l - 1)`` in nats, NaN at layer 0. Negative = the layer focuses more
  than the one before.
- ``secondary_components``: 4-neighbour connected components of the top-rho set, minus one (>= 0).
  0 = one contiguous focus; higher = more fragmented.
- ``dbscan_secondary``: DBSCAN clusters of the top-rho patch coordinates, minus one (>= -1; -1 when every
  kept patch is noise or there are fewer than ``min_samples`` of them). Higher = more fragmented. With
  ``eps = 1.5`` diagonal neighbours join a cluster, unlike the 4-neighbour count.
- ``peakiness``: max patch probability in (0, 1]. Higher = more focused.
- ``top_mass_area``: fraction of patches in the smallest set holding ``rho`` of the mass (always the
  "mass" rule), in (0, 1]. Higher = less focused.
- ``region_mass`` (with a gold region): attention probability inside the region, in [0, 1]. Higher = more on
  target.
- ``region_mass_ratio``: ``region_mass`` divided by the region's area share; 1 = chance level, higher =
  more on target.
- ``pointing_hit``: 1.0 when the argmax patch lies inside the region, else 0.0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage
from sklearn.cluster import DBSCAN

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


def top_mass_mask(p2d: np.ndarray, rho: float = 0.10, rule: Rule = "mass") -> np.ndarray:
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


def secondary_components(p2d: np.ndarray, rho: float = 0.10, rule: Rule = "mass") -> int:
    """Components of the top-rho set minus one: 0 means one contiguous focus."""
    return component_count(top_mass_mask(p2d, rho, rule)) - 1


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


def top_mass_area_fraction(p2d: np.ndarray, rho: float = 0.10) -> float:
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


def structural_curves(
    maps: np.ndarray,
    rho: float = 0.10,
    rule: Rule = "mass",
    region: np.ndarray | None = None,
    eps: float = 1.5,
    min_samples: int = 3,
) -> dict[str, np.ndarray]:
    """Per-layer structural metrics of one image (keys and units in the module docstring).

    Args:
        maps: ``[L, rows, cols]`` distributions from :func:`layer_maps`.
        rho: top-mass fraction for the component counts (``top_mass_area`` always uses the "mass" rule).
        rule: selection rule for the component counts, see :func:`top_mass_mask`.
        region: optional boolean ``[rows, cols]`` gold-region mask (see :func:`region_mask`).
        eps, min_samples: DBSCAN parameters.

    Returns:
        Dict of float arrays of length L.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [L, rows, cols], got shape {maps.shape}")
    h = spatial_entropy(maps)  # [L]
    out: dict[str, np.ndarray] = {
        "entropy": h,
        "entropy_norm": normalized_entropy(maps),
        "entropy_delta": entropy_delta(h),
    }
    masks = [top_mass_mask(m, rho, rule) for m in maps]
    out["secondary_components"] = np.array([component_count(k) - 1 for k in masks], dtype=np.float64)
    out["dbscan_secondary"] = np.array([dbscan_components(k, eps, min_samples) - 1 for k in masks], dtype=np.float64)
    out["peakiness"] = maps.max(axis=(1, 2))
    out["top_mass_area"] = np.array([top_mass_area_fraction(m, rho) for m in maps])
    if region is not None:
        out["region_mass"] = np.array([region_mass(m, region) for m in maps])
        out["region_mass_ratio"] = np.array([region_mass_ratio(m, region) for m in maps])
        out["pointing_hit"] = np.array([float(pointing_hit(m, region)) for m in maps])
    return out


def summarize_curves(curves: dict[str, np.ndarray], layer: int = -1) -> dict[str, float]:
    """Scalars per curve: its value at ``layer`` (same key) and ``<name>_mean``, the NaN-ignoring layer mean."""
    out: dict[str, float] = {}
    for name, c in curves.items():
        c = np.asarray(c, dtype=np.float64)
        out[name] = float(c[layer])
        finite = c[~np.isnan(c)]
        out[f"{name}_mean"] = float(finite.mean()) if finite.size else math.nan
    return out
