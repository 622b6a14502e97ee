"""The tasks the toy VLMs are trained on: ShapesWorld's question families plus three
auxiliary ones that exist only for training (describe, single attribute, position).

Without the *describe* task (write every object, left to right, loss on every caption
token) the image pathway collapses and answers stay at chance; the *position* task ("Where
is the red circle in the image?") teaches where each object is.
"""

from __future__ import annotations

import numpy as np

from vrp.world.questions import (
    POPE_STRATEGIES,
    DatasetStats,
    Question,
    attribute_question,
    counting_question,
    describe,
    existence_questions,
    object_region,
    referring_name,
    spatial_question,
)
from vrp.world.scene import COLOURS, SHAPES, Scene, WorldConfig, WorldStats, sample_scene


def position_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """Auxiliary: the side of the image an object is on (training only).

    Returns:
        A question about one object far enough from the centre, or None when there is none.
    """
    cx, cy = (d / 2 for d in scene.dims)
    cands = []
    for o in scene.objects:
        name = referring_name(scene, o, True)
        dx, dy = o.cx - cx, o.cy - cy
        if name is None or max(abs(dx), abs(dy)) < 6:
            continue
        ans = ("left" if dx < 0 else "right") if abs(dx) >= abs(dy) else ("top" if dy < 0 else "bottom")
        cands.append((name, ans, o))
    if not cands:
        return None
    name, ans, o = cands[int(rng.integers(len(cands)))]
    return Question("position", f"Where is the {name} in the image?", ans, (object_region(name, o),), {})


def single_attribute_question(scene: Scene, rng: np.random.Generator) -> Question:
    """Auxiliary: existence of one attribute alone ("Is there a red object?", "Is there a circle?")."""
    if rng.random() < 0.5:
        value = COLOURS[int(rng.integers(len(COLOURS)))]
        present = any(o.colour == value for o in scene.objects)
        text = f"Is there a {value} object in the image?"
    else:
        value = SHAPES[int(rng.integers(len(SHAPES)))]
        present = any(o.shape == value for o in scene.objects)
        text = f"Is there a {value} in the image?"
    return Question("single", text, "yes" if present else "no", (), {})


def sample_example(
    rng: np.random.Generator,
    task: str,
    wcfg: WorldConfig,
    wstats: WorldStats,
    dstats: DatasetStats,
    describe_positions: bool = False,
) -> tuple[Scene, Question] | None:
    """Draw a fresh scene and one question of ``task`` about it.

    Args:
        rng: the generator every draw comes from (the scene first, then the question).
        task: a ShapesWorld task family or one of the auxiliary tasks (describe, position, single).
        wcfg: the world the scene is drawn from.
        wstats: ``wcfg``'s statistics.
        dstats: dataset statistics for the existence questions' negatives.
        describe_positions: whether describe captions name each object's image quadrant.

    Returns:
        ``(scene, question)``, or None when the scene admits no question of ``task``.

    Raises:
        ValueError: for an unknown ``task``.
    """
    scene = sample_scene(rng, wcfg, wstats)
    if task == "describe":
        q = Question("describe", "Describe the image.", describe(scene, describe_positions), (), {})
    elif task == "position":
        q = position_question(scene, rng)
    elif task == "single":
        q = single_attribute_question(scene, rng)
    elif task == "existence":
        strat = POPE_STRATEGIES[int(rng.integers(3))]
        q = existence_questions(scene, strat, dstats, rng)[int(rng.integers(2))]
    elif task == "counting":
        q = counting_question(scene)
    elif task == "spatial":
        q = spatial_question(scene, rng)
    elif task == "attribute":
        q = attribute_question(scene, rng)
    else:
        raise ValueError(f"unknown training task {task!r}")
    return None if q is None else (scene, q)
