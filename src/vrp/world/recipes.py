"""The per-architecture training recipes that produced the shipped toy checkpoints."""

from __future__ import annotations

from dataclasses import replace

from vrp.world.scene import WorldConfig
from vrp.world.train import TrainConfig

# Steps per architecture: about 13-15 minutes each on 2 CPU cores (16 image tokens).
RECIPES: dict[str, TrainConfig] = {
    "llava": TrainConfig(arch="llava", steps=6000),
    "paligemma": TrainConfig(arch="paligemma", steps=6000),
    "qwen2vl": TrainConfig(arch="qwen2vl", steps=6000),
}
WORLD = WorldConfig()


def recipe_for(arch: str, seed: int = 0, steps: int | None = None, threads: int = 0) -> tuple[TrainConfig, WorldConfig]:
    """The shipped recipe for ``arch``, with optional overrides."""
    cfg = replace(RECIPES[arch], seed=seed, threads=threads)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    return cfg, WORLD
