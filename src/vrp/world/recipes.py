"""The training recipe that produced the shipped toy checkpoints (all three architectures).

Task weights favouring existence and spatial questions, an object-count curriculum over
the first 40% of steps, per-patch colour/shape/row/column auxiliary heads, learned vision
position embeddings initialised at s.d. 1.0, object quadrants in the describe captions, and
attention supervision (decoder layer 2, heads 0/1 onto the named objects of position,
spatial and attribute questions: what made spatial relations learnable, see
docs/experiments/2026-11-22-toy-spatial). Only the number of steps differs by architecture
(``STEPS``: where each family's held-out accuracies reach the target band; see README "Toy
models").
"""

from __future__ import annotations

from dataclasses import replace

from vrp.world.scene import WorldConfig
from vrp.world.train import TrainConfig

TASK_WEIGHTS = {
    "describe": 1.0,
    "single": 1.0,
    "position": 1.5,
    "existence": 2.5,
    "counting": 1.5,
    "spatial": 3.0,
    "attribute": 2.0,
}
STEPS = {"llava": 3500, "paligemma": 6000, "qwen2vl": 10000}
RECIPE = TrainConfig(
    curriculum=0.4,
    task_weights=TASK_WEIGHTS,
    position_heads=True,
    pos_embed_std=1.0,
    describe_positions=True,
    attn_sup_weight=1.0,
    attn_sup_layer=2,
)
RECIPES: dict[str, TrainConfig] = {arch: replace(RECIPE, arch=arch, steps=n) for arch, n in STEPS.items()}
WORLD = WorldConfig()


def recipe_for(arch: str, seed: int = 0, steps: int | None = None, threads: int = 0) -> tuple[TrainConfig, WorldConfig]:
    """The shipped recipe for ``arch``, with optional overrides."""
    cfg = replace(RECIPES[arch], seed=seed, threads=threads)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    return cfg, WORLD
