"""The training recipe that produced the shipped toy checkpoints (all three architectures).

Task weights favouring existence and spatial questions, an object-count curriculum over
the first 40% of steps, per-patch colour/shape auxiliary heads; 6,000 steps, about 13-15
minutes on 2 CPU cores for one model alone (see README "Toy models").
"""

from __future__ import annotations

from dataclasses import replace

from vrp.world.scene import WorldConfig
from vrp.world.train import TrainConfig

RECIPE = TrainConfig(steps=6000, position_heads=False, curriculum=0.4)
RECIPES: dict[str, TrainConfig] = {arch: replace(RECIPE, arch=arch) for arch in ("llava", "paligemma", "qwen2vl")}
WORLD = WorldConfig()


def recipe_for(arch: str, seed: int = 0, steps: int | None = None, threads: int = 0) -> tuple[TrainConfig, WorldConfig]:
    """The shipped recipe for ``arch``, with optional overrides."""
    cfg = replace(RECIPES[arch], seed=seed, threads=threads)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    return cfg, WORLD
