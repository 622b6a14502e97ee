"""The per-architecture training recipes that produced the shipped toy checkpoints.

Two recipes exist; ``RECIPES`` maps each architecture to the one its shipped checkpoint
was trained with (see README "Toy models" for the measured accuracies of each).

- ``FIRST``: task weights favouring existence and spatial, a long object-count curriculum
  (40% of steps), per-patch colour/shape auxiliary heads only.
- ``SECOND``: rebalanced towards attribute and counting, a short curriculum (15%), and
  per-patch row/column heads as well, so image tokens keep their position readable.

Both run 6,000 steps: about 13-15 minutes on 2 CPU cores for one model alone.
"""

from __future__ import annotations

from dataclasses import replace

from vrp.world.scene import WorldConfig
from vrp.world.train import TrainConfig

FIRST = TrainConfig(steps=6000, position_heads=False, curriculum=0.4)
SECOND = TrainConfig(
    steps=6000,
    position_heads=True,
    curriculum=0.15,
    task_weights={
        "describe": 1.0,
        "single": 1.0,
        "position": 1.5,
        "existence": 2.0,
        "counting": 2.0,
        "spatial": 3.0,
        "attribute": 2.5,
    },
)
RECIPES: dict[str, TrainConfig] = {
    "llava": replace(SECOND, arch="llava"),
    "paligemma": replace(SECOND, arch="paligemma"),
    "qwen2vl": replace(FIRST, arch="qwen2vl"),
}
WORLD = WorldConfig()


def recipe_for(arch: str, seed: int = 0, steps: int | None = None, threads: int = 0) -> tuple[TrainConfig, WorldConfig]:
    """The shipped recipe for ``arch``, with optional overrides."""
    cfg = replace(RECIPES[arch], seed=seed, threads=threads)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    return cfg, WORLD
