"""Generate ShapesWorld datasets in memory or on disk (generic JSONL format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrp.fileio import atomic_write_bytes
from vrp.world.questions import POPE_STRATEGIES, TASKS, DatasetStats, Question, questions_for_scene
from vrp.world.scene import Scene, WorldConfig, WorldStats, png_bytes, render, sample_scene


@dataclass
class SceneQuestions:
    index: int
    scene: Scene
    questions: list[Question]


STRATEGY = "mixed"  # the default: the three POPE strategies in rotation


def strategy_for(index: int, strategy: str) -> str:
    """POPE strategy of scene ``index``: fixed, or rotating when ``strategy == "mixed"``."""
    if strategy == "mixed":
        return POPE_STRATEGIES[index % len(POPE_STRATEGIES)]
    if strategy not in POPE_STRATEGIES:
        raise ValueError(f"unknown POPE strategy {strategy!r}; expected mixed or one of {POPE_STRATEGIES}")
    return strategy


def generate(
    n_images: int,
    seed: int,
    cfg: WorldConfig | None = None,
    strategy: str = STRATEGY,
    tasks: tuple[str, ...] = TASKS,
) -> tuple[list[SceneQuestions], DatasetStats]:
    """Sample ``n_images`` scenes and their questions. Deterministic in ``seed``.

    Scenes are drawn first; POPE's frequency and co-occurrence statistics are then
    measured over this dataset's scenes (as POPE does over COCO), and questions drawn.
    """
    if n_images < 1:
        raise ValueError(f"a ShapesWorld set needs at least 1 image, got {n_images}")
    cfg = cfg or WorldConfig()
    wstats = WorldStats.from_config(cfg)
    scene_rng = np.random.default_rng([seed, 0])
    scenes = [sample_scene(scene_rng, cfg, wstats) for _ in range(n_images)]
    dstats = DatasetStats.from_scenes(scenes)
    q_rng = np.random.default_rng([seed, 1])
    out = [
        SceneQuestions(i, sc, questions_for_scene(sc, dstats, q_rng, strategy_for(i, strategy), tasks))
        for i, sc in enumerate(scenes)
    ]
    return out, dstats


def write_dataset(
    out: str | Path,
    n_images: int,
    seed: int,
    cfg: WorldConfig | None = None,
    strategy: str = STRATEGY,
    tasks: tuple[str, ...] = TASKS,
) -> Path:
    """Write images/, items.jsonl (generic format), scenes.jsonl and world.json; return the
    path of items.jsonl."""
    cfg = cfg or WorldConfig()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    data, _ = generate(n_images, seed, cfg, strategy, tasks)
    lines, scene_lines = [], []
    for sq in data:
        name = f"images/{sq.index:06d}.png"
        atomic_write_bytes(out / name, png_bytes(render(sq.scene, cfg)))
        scene_lines.append(json.dumps({"image": name, **sq.scene.to_dict()}))
        counters: dict[str, int] = {}
        for q in sq.questions:
            k = counters.get(q.task, 0)
            counters[q.task] = k + 1
            rec = {
                "id": f"sw{seed}-{sq.index:06d}-{q.task}-{k}",
                "image": name,
                "question": q.question,
                "answers": [q.answer],
                "task": q.task,
                "regions": [dict(r) for r in q.regions],
                "meta": dict(q.meta),
            }
            lines.append(json.dumps(rec))
    atomic_write_bytes(out / "items.jsonl", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / "scenes.jsonl", ("\n".join(scene_lines) + "\n").encode())
    meta = {
        "format": "vrp-generic-jsonl",
        "generator": "shapesworld",
        "seed": seed,
        "n_images": n_images,
        "strategy": strategy,
        "tasks": list(tasks),
        "world": cfg.to_dict(),
    }
    atomic_write_bytes(out / "world.json", json.dumps(meta, indent=2).encode())
    return out / "items.jsonl"
