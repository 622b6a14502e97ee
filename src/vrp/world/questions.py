"""ShapesWorld questions with exact ground truth, derived from the scene alone.

Question families (the ``task`` field of an item):

- ``existence``: "Is there a red circle in the image?" -> yes/no. Each image gives one
  positive and one negative, so yes/no is balanced exactly. The negative is drawn with
  one of POPE's strategies (``meta.strategy``): ``random`` (any absent category),
  ``popular`` (among the most frequent absent categories of the dataset) or
  ``adversarial`` (among the absent categories that co-occur most with the present ones).
- ``counting``: "How many objects are in the image?" -> "1".."N".
- ``spatial``: "Where is the red circle relative to the blue square?" -> left, right,
  above or below; only asked about pairs whose relation is unambiguous (one axis
  dominates by a clear margin) and whose centres lie on opposite sides of the image's
  centre line on that axis (so the relation is visible at the scale of the whole image).
- ``attribute``: "What colour is the circle?" -> colour name; only asked when the
  named shape (with its size if needed) identifies one object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vrp.world.scene import Obj, Scene, categories, category_name

TASKS: tuple[str, ...] = ("existence", "counting", "spatial", "attribute")
POPE_STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
# A pair qualifies for a spatial question when the centres differ by at least this many
# pixels on the dominant axis, and that axis dominates the other by this ratio.
SPATIAL_MIN_PX = 8.0
SPATIAL_DOMINANCE = 2.0


@dataclass(frozen=True)
class Question:
    task: str
    question: str
    answer: str
    regions: tuple[dict, ...]  # ({"label": str, "box": [x0, y0, x1, y1]}, ...)
    meta: dict


def present_categories(scene: Scene) -> set[str]:
    return {o.category for o in scene.objects}


def exists(scene: Scene, category: str) -> bool:
    return category in present_categories(scene)


def count_objects(scene: Scene) -> int:
    return len(scene.objects)


def relation(a: Obj, b: Obj) -> str | None:
    """Relation of ``a`` to ``b`` ("left" = a is left of b), or None if ambiguous."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= SPATIAL_MIN_PX and abs(dx) >= SPATIAL_DOMINANCE * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= SPATIAL_MIN_PX and abs(dy) >= SPATIAL_DOMINANCE * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def opposite_sides(a: Obj, b: Obj, rel: str, size: int | tuple[int, int]) -> bool:
    """Whether a and b lie on opposite sides of the image's centre line along ``rel``'s axis.

    ``size``: the square image's side, or ``(width, height)``."""
    width, height = (size, size) if isinstance(size, int) else size
    if rel in ("left", "right"):
        c = width / 2
        return (a.cx - c) * (b.cx - c) < 0
    c = height / 2
    return (a.cy - c) * (b.cy - c) < 0


def referring_name(scene: Scene, obj: Obj, with_colour: bool) -> str | None:
    """The shortest name that picks out ``obj`` alone, or None if none does."""
    if with_colour:
        options = [obj.category, f"{obj.size} {obj.category}"]
        keys = [lambda o: o.category, lambda o: (o.size, o.category)]
    else:
        options = [obj.shape, f"{obj.size} {obj.shape}"]
        keys = [lambda o: o.shape, lambda o: (o.size, o.shape)]
    for name, key in zip(options, keys, strict=True):
        if sum(key(o) == key(obj) for o in scene.objects) == 1:
            return name
    return None


def object_region(label: str, o: Obj) -> dict:
    """An item's gold region for object ``o``: ``{"label", "box": [x0, y0, x1, y1]}`` in pixels."""
    return {"label": label, "box": list(o.box)}


def describe(scene: Scene, quadrants: bool = False) -> str:
    """Caption listing every object left to right, e.g. "small red circle large blue square";
    with ``quadrants``, each followed by its image quadrant ("small red circle top left ...")."""
    cx, cy = (d / 2 for d in scene.dims)

    def words(o: Obj) -> str:
        where = f" {'top' if o.cy < cy else 'bottom'} {'left' if o.cx < cx else 'right'}" if quadrants else ""
        return f"{o.size} {o.colour} {o.shape}{where}"

    return " ".join(words(o) for o in sorted(scene.objects, key=lambda o: (o.cx, o.cy)))


@dataclass(frozen=True)
class DatasetStats:
    """Category frequency and co-occurrence counts measured over a set of scenes (as POPE
    measures them over COCO annotations)."""

    freq: dict[str, int]
    cooc: dict[str, dict[str, int]]

    @classmethod
    def from_scenes(cls, scenes: list[Scene]) -> DatasetStats:
        names = [category_name(c, s) for c, s in categories()]
        freq = {n: 0 for n in names}
        cooc = {n: {m: 0 for m in names} for n in names}
        for sc in scenes:
            present = sorted(present_categories(sc))
            for p in present:
                freq[p] += 1
                for q in present:
                    if q != p:
                        cooc[p][q] += 1
        return cls(freq=freq, cooc=cooc)

    def popular_ranking(self, absent: list[str]) -> list[str]:
        return sorted(absent, key=lambda n: (-self.freq[n], n))

    def adversarial_ranking(self, absent: list[str], present: set[str]) -> list[str]:
        score = {n: sum(self.cooc[p][n] for p in present) for n in absent}
        return sorted(absent, key=lambda n: (-score[n], -self.freq[n], n))


def negative_category(
    scene: Scene, strategy: str, stats: DatasetStats, rng: np.random.Generator, top_k: int = 3
) -> str:
    """Pick an absent category with one of POPE's strategies (top-k candidates, one drawn)."""
    present = present_categories(scene)
    absent = [category_name(c, s) for c, s in categories() if category_name(c, s) not in present]
    if strategy == "random":
        return absent[int(rng.integers(len(absent)))]
    if strategy == "popular":
        ranked = stats.popular_ranking(absent)
    elif strategy == "adversarial":
        ranked = stats.adversarial_ranking(absent, present)
    else:
        raise ValueError(f"unknown POPE strategy {strategy!r}; expected one of {POPE_STRATEGIES}")
    cands = ranked[:top_k]
    return cands[int(rng.integers(len(cands)))]


def existence_questions(scene: Scene, strategy: str, stats: DatasetStats, rng: np.random.Generator) -> list[Question]:
    present = sorted(present_categories(scene))
    pos = present[int(rng.integers(len(present)))]
    neg = negative_category(scene, strategy, stats, rng)
    out = []
    for cat, ans in ((pos, "yes"), (neg, "no")):
        regions = tuple(object_region(cat, o) for o in scene.objects if o.category == cat)
        out.append(
            Question(
                task="existence",
                question=f"Is there a {cat} in the image?",
                answer=ans,
                regions=regions,
                meta={"strategy": strategy, "category": cat},
            )
        )
    return out


def counting_question(scene: Scene) -> Question:
    return Question(
        task="counting",
        question="How many objects are in the image?",
        answer=str(count_objects(scene)),
        regions=tuple(object_region(o.category, o) for o in scene.objects),
        meta={},
    )


def spatial_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    pairs = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b:
                continue
            rel = relation(a, b)
            if rel is None or not opposite_sides(a, b, rel, scene.dims):
                continue
            na, nb = referring_name(scene, a, True), referring_name(scene, b, True)
            if na is not None and nb is not None:
                pairs.append((a, b, na, nb, rel))
    if not pairs:
        return None
    a, b, na, nb, rel = pairs[int(rng.integers(len(pairs)))]
    return Question(
        task="spatial",
        question=f"Where is the {na} relative to the {nb}?",
        answer=rel,
        regions=(object_region(na, a), object_region(nb, b)),
        meta={"relation": rel},
    )


def attribute_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    cands = [(o, n) for o in scene.objects if (n := referring_name(scene, o, False)) is not None]
    if not cands:
        return None
    o, name = cands[int(rng.integers(len(cands)))]
    return Question(
        task="attribute",
        question=f"What colour is the {name}?",
        answer=o.colour,
        regions=(object_region(name, o),),
        meta={"attribute": "colour"},
    )


def questions_for_scene(
    scene: Scene,
    stats: DatasetStats,
    rng: np.random.Generator,
    strategy: str,
    tasks: tuple[str, ...] = TASKS,
) -> list[Question]:
    """All questions of the requested families for one scene."""
    out: list[Question] = []
    for task in tasks:
        if task == "existence":
            out.extend(existence_questions(scene, strategy, stats, rng))
        elif task == "counting":
            out.append(counting_question(scene))
        elif task == "spatial":
            q = spatial_question(scene, rng)
            if q is not None:
                out.append(q)
        elif task == "attribute":
            q = attribute_question(scene, rng)
            if q is not None:
                out.append(q)
        else:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return out
