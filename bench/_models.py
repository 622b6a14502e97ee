"""Models shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path


def long_context_model(out: Path, arch: str) -> str:
    """A tiny random model with LLaVA-1.5 image geometry (336 px / patch 14 -> 576 tokens)."""
    from vrp.toys.build import build_toy

    model, processor = build_toy(arch, seed=0, image_size=336, patch=14)
    if arch == "qwen2vl":  # let 336 x 336 through unresized: 24 x 24 merged tokens
        processor.image_processor.size = {"shortest_edge": 14 * 14, "longest_edge": 336 * 336}
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)
