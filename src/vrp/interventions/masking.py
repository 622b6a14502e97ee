"""Which image patches to mask, and masking them in pixel space (pure functions, no model).

A patch is one cell of the canonical view's image-token grid (``rows x cols``; for Qwen2-VL
one merged 2x2 block). The pixel region of a cell is found through the view's inverse
geometry (:meth:`vrp.models.grids.View.to_image`), passed in as a function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

FILLS = ("patch-mean", "image-mean")


def n_masked(n_cells: int, frac: float) -> int:
    """How many of ``n_cells`` patches a fraction ``frac`` masks (rounded to nearest, half up)."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"mask fraction must be in [0, 1], got {frac}")
    return min(n_cells, int(np.floor(frac * n_cells + 0.5)))


def top_cells(attn: np.ndarray, frac: float) -> np.ndarray:
    """Flat indices of the ``frac`` most attended cells of a ``[rows, cols]`` map, most attended
    first (ties broken by position, so the choice is deterministic)."""
    flat = np.asarray(attn, dtype=np.float64).ravel()
    k = n_masked(flat.size, frac)
    return np.argsort(-flat, kind="stable")[:k]


def random_cells(n_cells: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct cells drawn uniformly (the control of :func:`top_cells`)."""
    return np.sort(rng.choice(n_cells, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


def cell_view_box(cell: int, rows: int, cols: int) -> tuple[float, float, float, float]:
    """The normalized box ``[x0, y0, x1, y1]`` of a flat cell index in the model's view."""
    r, c = divmod(int(cell), cols)
    if not 0 <= r < rows:
        raise ValueError(f"cell {cell} is outside a {rows}x{cols} grid")
    return (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows)


def mask_pixels(
    image: Image.Image,
    cells: Sequence[int],
    rows: int,
    cols: int,
    to_pixels: Callable[[tuple[float, float, float, float]], Sequence[float]],
    fill: str = "patch-mean",
) -> Image.Image:
    """A copy of ``image`` with the pixel region of each cell filled with a flat colour.

    Args:
        image: the item's image (RGB).
        cells: flat cell indices.
        rows, cols: the grid.
        to_pixels: normalized view box -> pixel box of the original image.
        fill: ``"patch-mean"`` (each region's own mean colour: removes the detail, keeps the
            average colour) or ``"image-mean"`` (the whole image's mean colour).
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    arr = np.asarray(image.convert("RGB")).copy()
    if not len(cells):
        return Image.fromarray(arr)
    h, w = arr.shape[:2]
    global_mean = arr.reshape(-1, 3).mean(0)
    for cell in cells:
        x0, y0, x1, y1 = to_pixels(cell_view_box(cell, rows, cols))
        xa, xb = (min(max(round(v), 0), w) for v in (x0, x1))
        ya, yb = (min(max(round(v), 0), h) for v in (y0, y1))
        if xb <= xa or yb <= ya:
            continue
        region = arr[ya:yb, xa:xb]
        colour = region.reshape(-1, 3).mean(0) if fill == "patch-mean" else global_mean
        region[...] = np.round(colour).astype(arr.dtype)
    return Image.fromarray(arr)
