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


# llava-v1.6's anyres pinpoints (height, width)
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def long_context_family(out: Path, model_type: str) -> tuple[str, tuple[int, int]]:
    """A tiny random model of a newer family at its real checkpoints' image geometry, and the
    image size (width, height) that gives it thousands of image tokens (LLaVA-NeXT: base 24 x 24
    plus a stitched 2 x 2 tile grid with its newline slots) or Qwen2.5-VL's native resolution
    (patch 14, 2 x 2 merge, windowed vision tower)."""
    from vrp.toys.tiny.llava_next import build_llava_next
    from vrp.toys.tiny.qwen import build_qwen2_5_vl

    if model_type == "llava_next":
        model, processor = build_llava_next(seed=0, tile=336, patch=14, pinpoints=LLAVA_NEXT_PINPOINTS)
        size = (672, 560)
    elif model_type == "qwen2_5_vl":
        model, processor = build_qwen2_5_vl(seed=0, patch=14, max_pixels=1280 * 28 * 28)
        size = (952, 672)
    else:
        raise ValueError(f"no long-context benchmark model of {model_type!r}")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out), size
