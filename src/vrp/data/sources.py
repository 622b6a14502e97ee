"""Resolve a ``--data`` spec to items.

Specs:
    shapesworld            the embedded default: a ShapesWorld set generated into the run
                           directory (``world_images`` images, the run's seed)
    shapesworld:N          the same with N images
    generic:PATH | PATH    a generic JSONL file (or a folder holding ``items.jsonl``)
    FORMAT:SPEC            a published benchmark (vrp.data.benchmarks): pope, vqav2, textvqa,
                           counting, spatial, amber, hallusionbench, llava_bench
"""

from __future__ import annotations

import warnings
from pathlib import Path

from vrp.config import RunConfig
from vrp.data.benchmarks import BENCHMARK_FORMATS, REGISTRY, load_benchmark, sniff
from vrp.data.errors import DataSpecError
from vrp.data.items import Item, LoadResult, load_generic_jsonl

FORMATS: tuple[str, ...] = ("shapesworld", "generic", *BENCHMARK_FORMATS)

__all__ = ["FORMATS", "DataSpecError", "load_data", "load_items", "split_spec"]


def split_spec(spec: str) -> tuple[str, str]:
    """``"fmt:rest"`` -> (fmt, rest); a bare path -> ("generic", path).

    A Windows drive letter or a path containing ":" without a known prefix is a path.
    """
    head, sep, rest = spec.partition(":")
    if sep and head in FORMATS:
        return head, rest
    if spec == "shapesworld":
        return "shapesworld", ""
    return "generic", spec


def load_data(spec: str, run_dir: Path, seed: int, world_images: int) -> tuple[LoadResult, dict]:
    """Load the items a spec names. Returns (items and load failures, provenance dict)."""
    fmt, rest = split_spec(spec)
    if fmt == "shapesworld":
        from vrp.world.dataset import write_dataset

        n = world_images
        if rest:
            try:
                n = int(rest)
            except ValueError:
                raise DataSpecError(f"shapesworld:N needs an integer N, got {rest!r}") from None
            if n < 1:
                raise DataSpecError(f"shapesworld:N needs N >= 1, got {n}")
        path = write_dataset(run_dir / "data", n_images=n, seed=seed)
        return load_generic_jsonl(path), {"format": "shapesworld", "path": str(path), "n_images": n, "seed": seed}
    if fmt in REGISTRY:
        return load_benchmark(fmt, rest, run_dir, FORMATS)
    path = Path(rest)
    if path.is_dir():
        path = path / "items.jsonl"
    if not path.is_file():
        raise DataSpecError(
            f"data file {str(path)!r} does not exist; give a generic JSONL file, a folder with "
            f"items.jsonl, or one of the formats {', '.join(FORMATS)} as FORMAT:PATH"
        )
    result = load_generic_jsonl(path)
    if not result.items:
        first = result.failures[0] if result.failures else None
        why = f"first error at {first.source}: {first.error}" if first else "the file holds no records"
        guess = sniff(path)
        hint = f"; it looks like the {guess} format: use --data {REGISTRY[guess].usage}" if guess else ""
        raise DataSpecError(
            f"{path} is not in any supported format ({', '.join(FORMATS)}): no record parsed; {why}{hint}"
        )
    return result, {"format": fmt, "path": str(path.resolve())}


def load_items(
    spec: str, root: str | Path = ".", seed: int = RunConfig.seed, world_images: int = RunConfig.world_images
) -> list[Item]:
    """The items of a data spec, as ``vrp run --data SPEC`` reads them.

    Args:
        spec: ``shapesworld``, ``shapesworld:N``, a generic JSONL file or folder, or
            ``FORMAT:SPEC`` of a published benchmark (docs/data.md).
        root: folder where generated data (ShapesWorld, under ``root/data``) and images
            extracted from benchmark files are written.
        seed: seed of generated data.
        world_images: images of ``shapesworld`` without ``:N``.

    Malformed records are skipped with a warning naming each one's file and line (as a run
    records them in ``failures.jsonl``).

    Raises:
        DataSpecError: the spec names nothing loadable.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    loaded, _ = load_data(spec, root, seed, world_images)
    for f in loaded.failures:
        warnings.warn(f"skipped {f.source}: {f.error}", stacklevel=2)
    return loaded.items
