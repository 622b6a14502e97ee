"""ShapesWorld scenes: categories, co-occurrence statistics, sampling and rendering.

A scene is a list of non-overlapping objects on a plain background. Each object has a
shape, a colour (a category is shape x colour) and a size class, plus its exact box.
Everything is derived from a seeded ``numpy.random.Generator``: the same seed gives the
same scenes and the same image bytes.

Named presets (:data:`PRESETS`, ``vrp world generate --world NAME``): ``default`` (48 px square
images, 1-5 objects: what the shipped toys see as a 4 x 4 token grid at 12 px per token),
``fine`` (64 px, 1-8 objects: an 8 x 8 grid at 8 px per token) and ``fine-aspect`` (``fine`` at
several aspect ratios, 64 to 128 px a side, for a model of dynamic resolution such as
Qwen2-VL: 8 x 8 up to 8 x 16 tokens).
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from vrp.config import Config

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "purple")
# Hue (degrees) of each colour's centre; neighbours are 60 degrees apart.
COLOUR_HUES: dict[str, float] = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "purple": 300.0,
}
SIZES: tuple[str, ...] = ("small", "large")


@dataclass(frozen=True)
class WorldConfig(Config):
    """Knobs of the synthetic world. Every field has a default; all are data.

    Attributes:
        image_size: side of the square image in pixels.
        min_objects: fewest objects in a scene.
        max_objects: most objects in a scene.
        small_px: (min, max) side in pixels of a small object's box.
        large_px: (min, max) side in pixels of a large object's box.
        hue_jitter: standard deviation (degrees) of the per-object hue noise. Colours
            are 60 degrees apart, so a large jitter makes neighbouring colours
            genuinely ambiguous (irreducible error, on purpose).
        theme_prob: probability that an object is drawn from the scene's theme group
            (this is what creates co-occurrence statistics).
        n_groups: number of co-occurrence groups the categories are partitioned into.
        background: RGB background colour.
        world_seed: seed of the world's fixed statistics (category frequencies and
            co-occurrence groups); independent of the seed of a generated dataset.
        sizes: (width, height) pixel sizes each scene draws one of, uniformly (non-square
            images); empty: every image is ``image_size`` x ``image_size`` (and no draw is made,
            so the default world's scenes are what they always were).
        place_attempts: random placements tried per object before it is left out (objects
            never overlap; a crowded scene can end with fewer than the number drawn).
    """

    image_size: int = 48
    min_objects: int = 1
    max_objects: int = 5
    small_px: tuple[int, int] = (9, 12)
    large_px: tuple[int, int] = (14, 18)
    hue_jitter: float = 12.0
    theme_prob: float = 0.7
    n_groups: int = 6
    background: tuple[int, int, int] = (128, 128, 128)
    world_seed: int = 0
    sizes: tuple[tuple[int, int], ...] = ()
    place_attempts: int = 50

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        """As :meth:`Config.from_dict`, with ``sizes``' JSON lists read back as ``(width, height)`` tuples."""
        if isinstance(d.get("sizes"), list):
            d = {**d, "sizes": tuple(tuple(s) if isinstance(s, list) else s for s in d["sizes"])}
        return super().from_dict(d)

    @property
    def min_side(self) -> int:
        """The shortest image side of the world, in pixels."""
        return min([self.image_size] if not self.sizes else [min(s) for s in self.sizes])

    def check(self) -> None:
        n_cat = len(COLOURS) * len(SHAPES)
        self.require(
            (self.image_size >= 24, f"WorldConfig: image_size must be >= 24, got {self.image_size}"),
            (all(len(s) == 2 and min(s) >= 24 for s in self.sizes),
             f"WorldConfig: sizes must be (width, height) pairs with both sides >= 24, got {self.sizes}"),
            (self.place_attempts >= 1, f"WorldConfig: place_attempts must be >= 1, got {self.place_attempts}"),
            (1 <= self.min_objects <= self.max_objects,
             f"WorldConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"),
            *((4 <= getattr(self, n)[0] <= getattr(self, n)[1] <= self.min_side // 2,
               f"WorldConfig: {n} must be (lo, hi) with 4 <= lo <= hi <= (shortest image side)/2, "
               f"got {getattr(self, n)}")
              for n in ("small_px", "large_px")),
            (self.hue_jitter >= 0, f"WorldConfig: hue_jitter must be >= 0, got {self.hue_jitter}"),
            (0.0 <= self.theme_prob <= 1.0, f"WorldConfig: theme_prob must be in [0, 1], got {self.theme_prob}"),
            (1 <= self.n_groups <= n_cat, f"WorldConfig: n_groups must be in [1, {n_cat}], got {self.n_groups}"),
            (all(0 <= c <= 255 for c in self.background), "WorldConfig: background must be an RGB triple"),
        )  # fmt: skip


def categories() -> list[tuple[str, str]]:
    """All (colour, shape) categories in a fixed order."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def category_name(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


@dataclass(frozen=True)
class WorldStats:
    """The world's fixed prior: category weights and co-occurrence groups."""

    weights: np.ndarray  # [n_categories] sampling weight of each category (sums to 1)
    groups: tuple[tuple[int, ...], ...]  # partition of category indices into themes

    @classmethod
    def from_config(cls, cfg: WorldConfig) -> WorldStats:
        rng = np.random.default_rng(cfg.world_seed + 7919)
        n = len(categories())
        # Zipf-like frequencies so that "popular" negatives are meaningful.
        ranks = rng.permutation(n) + 1
        w = 1.0 / ranks**0.8
        perm = rng.permutation(n)
        groups = tuple(tuple(int(i) for i in g) for g in np.array_split(perm, cfg.n_groups))
        return cls(weights=w / w.sum(), groups=groups)


@dataclass
class Obj:
    """One object of a scene. ``box`` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]
    hue: float = 0.0  # the actual hue drawn, after jitter

    @property
    def category(self) -> str:
        return category_name(self.colour, self.shape)

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


@dataclass
class Scene:
    """The objects of one image. ``size`` is the image's width in pixels (its side when
    square); ``height`` is None for a square image."""

    objects: list[Obj] = field(default_factory=list)
    size: int = 48
    height: int | None = None

    @property
    def dims(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.size, self.size if self.height is None else self.height

    def to_dict(self) -> dict:
        extra = {} if self.height is None else {"height": self.height}  # square scenes: as before
        return {"size": self.size, **extra, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        objs = [Obj(**{**o, "box": tuple(o["box"])}) for o in d["objects"]]
        return cls(objects=objs, size=d["size"], height=d.get("height"))


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 1) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def sample_scene(rng: np.random.Generator, cfg: WorldConfig, stats: WorldStats) -> Scene:
    """Sample one scene: its size (when the world has several), a theme, 1..N categories,
    non-overlapping placements."""
    cats = categories()
    width = height = cfg.image_size
    if cfg.sizes:
        width, height = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    n_target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    theme = stats.groups[int(rng.integers(len(stats.groups)))]
    theme_w = stats.weights[list(theme)] / stats.weights[list(theme)].sum()
    objs: list[Obj] = []
    for _ in range(n_target):
        if rng.random() < cfg.theme_prob:
            ci = int(theme[rng.choice(len(theme), p=theme_w)])
        else:
            ci = int(rng.choice(len(cats), p=stats.weights))
        colour, shape = cats[ci]
        size = SIZES[int(rng.integers(len(SIZES)))]
        lo, hi = cfg.small_px if size == "small" else cfg.large_px
        for _attempt in range(cfg.place_attempts):
            side = int(rng.integers(lo, hi + 1))
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(not _overlaps(box, o.box) for o in objs):
                hue = (COLOUR_HUES[colour] + rng.normal(0.0, cfg.hue_jitter)) % 360.0
                objs.append(Obj(shape=shape, colour=colour, size=size, box=box, hue=float(hue)))
                break
    return Scene(objects=objs, size=width, height=None if not cfg.sizes else height)


def _rgb(hue: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue / 360.0, 0.85, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


def render(scene: Scene, cfg: WorldConfig) -> Image.Image:
    """Render a scene to an RGB image (deterministic: no randomness here)."""
    img = Image.new("RGB", scene.dims, cfg.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        draw_shape(draw, o, _rgb(o.hue))
    return img


def draw_shape(draw: ImageDraw.ImageDraw, o: Obj, fill) -> None:
    """Draw one object's shape inside its box with ``fill`` (any Pillow colour value)."""
    x0, y0, x1, y1 = o.box
    if o.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif o.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif o.shape == "triangle":
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {o.shape!r}")


def png_bytes(img: Image.Image) -> bytes:
    """PNG-encode deterministically (no timestamps or metadata)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


_FINE = WorldConfig(image_size=64, max_objects=8, small_px=(7, 11), large_px=(14, 20), place_attempts=200)
# name -> the world; "default" is WorldConfig() (what the shipped toys were trained on)
PRESETS: dict[str, WorldConfig] = {
    "default": WorldConfig(),
    "fine": _FINE,
    "fine-aspect": replace(_FINE, sizes=((64, 64), (96, 64), (64, 96), (128, 64), (64, 128))),
}


def world_preset(name: str) -> WorldConfig:
    """The named world of :data:`PRESETS`; a clear error for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; expected one of {', '.join(PRESETS)}") from None
