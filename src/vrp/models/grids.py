"""How an image appears in the prompt: one or more views, each a grid of image tokens.

A model may show the language model one image as several **views**: a single grid (LLaVA-1.5,
PaliGemma, Qwen2-VL, Gemma 3, Mistral 3), or a low-resolution global view plus a grid of
high-resolution tiles (LLaVA-NeXT, LLaVA-OneVision, Idefics3 / SmolVLM, InternVL). Each view
is a rectangular grid of patch tokens with their prompt positions (row-major) and the pixel
rectangle of the *original* image that the grid spans (its ``box``): the full image for a
plain resize, a centre crop (LLaVA-1.5), a padded area larger than the image, or one
region of it. Tiles that the processor cut from one resized image are stitched into one
view, so it is one grid over the region they cover.

Tokens of the image that are not patches (separators, row breaks, newline slots, tile
markers, a CLS token) are listed in ``ImageGrid.separators`` and never counted as patches.

Each image has a **canonical** view: the one the structural signals are computed on and the
report overlays (each adapter documents its choice in ``ModelAdapter.canonical_view``). An
:class:`ImageGrid` reads like its canonical view (``rows``, ``cols``, ``token_index``), so
code written for one grid per image works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)


@dataclass(frozen=True)
class View:
    """One grid of image tokens.

    Attributes:
        rows, cols: the grid.
        token_index: ``[rows * cols]`` prompt positions of the grid's tokens, row-major:
            ``token_index[r * cols + c]`` is the token of cell (r, c).
        box: ``(x0, y0, x1, y1)`` the pixel rectangle of the original image that the grid
            spans, x1 / y1 exclusive (it may extend past the image where the processor
            padded it).
        name: what the view is: ``image``, ``global``, ``tiles``, ...
    """

    rows: int
    cols: int
    token_index: np.ndarray  # [rows * cols] int, prompt positions
    box: Box
    name: str = "image"

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a view needs at least one row and column, got {self.rows}x{self.cols}")
        if len(self.token_index) != self.rows * self.cols:
            raise ValueError(
                f"view {self.name!r}: a {self.rows}x{self.cols} grid needs {self.rows * self.cols} tokens, "
                f"got {len(self.token_index)}"
            )
        x0, y0, x1, y1 = self.box
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"view {self.name!r}: empty box {self.box}")

    def to_grid(self, box: Sequence[float]) -> Box | None:
        """A pixel box ``[x0, y0, x1, y1]`` of the original image in this grid's coordinates,
        normalized to [0, 1] and clipped to the grid; None when it falls outside the view."""
        gx0, gy0, gx1, gy1 = self.box
        w, h = gx1 - gx0, gy1 - gy0
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1, y0, y1 = (x0 - gx0) / w, (x1 - gx0) / w, (y0 - gy0) / h, (y1 - gy0) / h
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def to_image(self, box: Sequence[float]) -> Box:
        """Inverse of :meth:`to_grid`: the pixel box of the original image that a normalized box
        of the grid covers (e.g. one cell), not clipped to the image."""
        gx0, gy0, gx1, gy1 = self.box
        x0, y0, x1, y1 = (float(v) for v in box)
        return (gx0 + x0 * (gx1 - gx0), gy0 + y0 * (gy1 - gy0), gx0 + x1 * (gx1 - gx0), gy0 + y1 * (gy1 - gy0))

    def shifted(self, offset: int) -> View:
        """The same view with its prompt positions moved by ``offset``."""
        return replace(self, token_index=np.asarray(self.token_index) + offset)


@dataclass(frozen=True)
class ImageGrid:
    """One image as the language model sees it: its views, in prompt order, and which one is
    canonical.

    Attributes:
        views: the views, in the order their tokens appear in the prompt.
        canonical: index into ``views`` of the view the signals read.
        separators: prompt positions of the image's tokens that are not patches.
    """

    views: tuple[View, ...]
    canonical: int = 0
    separators: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("an image needs at least one view")
        if not 0 <= self.canonical < len(self.views):
            raise ValueError(f"canonical view {self.canonical} is not one of the {len(self.views)} views")
        patches = np.concatenate([v.token_index for v in self.views])
        if len(np.unique(patches)) != len(patches) or np.isin(patches, self.separators).any():
            raise ValueError("an image's views and separators must not share a prompt position")

    @property
    def view(self) -> View:
        """The canonical view."""
        return self.views[self.canonical]

    @property
    def rows(self) -> int:
        return self.view.rows

    @property
    def cols(self) -> int:
        return self.view.cols

    @property
    def token_index(self) -> np.ndarray:
        """The canonical view's prompt positions, row-major."""
        return self.view.token_index

    @property
    def patch_index(self) -> np.ndarray:
        """Every patch token of every view (separators excluded), in view order."""
        return np.concatenate([v.token_index for v in self.views])

    def shifted(self, offset: int) -> ImageGrid:
        """The same image with every prompt position moved by ``offset`` (e.g. to unpad)."""
        return replace(
            self, views=tuple(v.shifted(offset) for v in self.views), separators=np.asarray(self.separators) + offset
        )

    def find(self, view: int | str | None) -> int:
        """The index of a view by index or name (None: the canonical one)."""
        if view is None:
            return self.canonical
        if isinstance(view, str):
            names = [v.name for v in self.views]
            if view not in names:
                raise ValueError(f"no view named {view!r}; this image's views: {names}")
            return names.index(view)
        if not -len(self.views) <= view < len(self.views):
            raise ValueError(f"view {view} is not one of the image's {len(self.views)} views")
        return view % len(self.views)


def single_view(rows: int, cols: int, token_index: np.ndarray, box: Box, separators=()) -> ImageGrid:
    """An image shown as one grid."""
    return ImageGrid(
        views=(View(rows, cols, np.asarray(token_index, dtype=np.int64), tuple(float(v) for v in box)),),
        separators=np.asarray(separators, dtype=np.int64),
    )


def full_box(image_size: tuple[int, int]) -> Box:
    """The whole image ``(0, 0, w, h)``: the box of a plain resize (aspect ratio not kept)."""
    w, h = image_size
    return (0.0, 0.0, float(w), float(h))


def centre_crop_box(image_size: tuple[int, int], shortest_edge: int, crop: tuple[int, int]) -> Box:
    """The box of a shortest-edge resize to ``shortest_edge`` followed by a centre crop of
    ``crop = (width, height)`` (CLIP / LLaVA-1.5), in the original image's pixels."""
    w, h = image_size
    scale = shortest_edge / min(w, h)
    cw, ch = crop
    ox, oy = (w * scale - cw) / 2, (h * scale - ch) / 2
    return (ox / scale, oy / scale, (ox + cw) / scale, (oy + ch) / scale)


def contiguous_runs(positions: Sequence[int]) -> list[np.ndarray]:
    """Split sorted prompt positions into runs of consecutive positions."""
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(pos) != 1) + 1
    return np.split(pos, cuts)
