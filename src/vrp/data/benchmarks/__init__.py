"""Benchmark loaders: published benchmark files -> items, one module per benchmark.

``--data FORMAT:SPEC`` with SPEC = ``FILE[+FILE2][@IMAGE_DIR][#SPLIT]`` (see
:mod:`vrp.data.benchmarks._common` and docs/data.md, "Benchmarks"). Each loader reports bad
records as load failures with file and record and keeps the rest; a file that is not in
its format at all is a :class:`~vrp.data.errors.DataSpecError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vrp.data.benchmarks import llava_bench, pope, suites, vqa, yesno
from vrp.data.benchmarks._common import BenchSpec, Collector, parse_spec
from vrp.data.errors import DataSpecError
from vrp.data.items import LoadResult


@dataclass(frozen=True)
class BenchmarkFormat:
    """One ``--data`` format: its spec usage, file count, splits and loader."""

    name: str
    usage: str
    n_files: int
    load: Callable[[BenchSpec, Path], Collector]
    splits: tuple[str, ...] = ()


REGISTRY: dict[str, BenchmarkFormat] = {}


def register(fmt: BenchmarkFormat) -> None:
    """Add a format; a name registered twice is an error."""
    if fmt.name in REGISTRY:
        raise ValueError(f"benchmark format {fmt.name!r} is already registered")
    REGISTRY[fmt.name] = fmt


for _fmt in (
    BenchmarkFormat("pope", "pope:FILE.json@IMAGE_DIR | pope:FILE.parquet[#SPLIT]", 1, pope.load_pope, pope.SPLITS),
    BenchmarkFormat("vqav2", "vqav2:QUESTIONS.json+ANNOTATIONS.json[@IMAGE_DIR]", 2, vqa.load_vqav2),
    BenchmarkFormat("textvqa", "textvqa:FILE.json[@IMAGE_DIR]", 1, vqa.load_textvqa),
    BenchmarkFormat("counting", "counting:FILE[@IMAGE_DIR]", 1, suites.load_counting),
    BenchmarkFormat("spatial", "spatial:FILE[@IMAGE_DIR]", 1, suites.load_spatial),
    BenchmarkFormat(
        "amber", "amber:QUERY.json+ANNOTATIONS.json[@IMAGE_DIR][#SPLIT]", 2, yesno.load_amber, yesno.AMBER_SPLITS
    ),
    BenchmarkFormat(
        "hallusionbench",
        "hallusionbench:FILE.json[@IMAGE_ROOT][#SPLIT]",
        1,
        yesno.load_hallusionbench,
        yesno.HALLUSION_SPLITS,
    ),
    BenchmarkFormat(
        "llava_bench", "llava_bench:DIR[@IMAGE_DIR][#SPLIT]", 1, llava_bench.load_llava_bench, llava_bench.SPLITS
    ),
):
    register(_fmt)

BENCHMARK_FORMATS: tuple[str, ...] = tuple(REGISTRY)


def load_benchmark(fmt: str, rest: str, run_dir: Path, all_formats: tuple[str, ...]) -> tuple[LoadResult, dict]:
    """Load ``FORMAT:SPEC``. Returns (items and load failures, provenance dict).

    Raises:
        DataSpecError: an unusable spec, a missing file or folder, an unknown split, or a
            file with no loadable record (the message names every format).
    """
    f = REGISTRY[fmt]
    spec = parse_spec(rest)
    if len(spec.files) != f.n_files:
        raise DataSpecError(f"{fmt} needs {f.n_files} file(s): {f.usage}; got {rest!r}")
    for p in spec.files:
        if not p.exists():
            raise DataSpecError(f"{fmt} file {str(p)!r} does not exist ({f.usage})")
    if spec.image_dir is not None and not spec.image_dir.is_dir():
        raise DataSpecError(f"image folder {str(spec.image_dir)!r} is not a folder ({f.usage})")
    if spec.split is not None and spec.split not in f.splits:
        have = ", ".join(f.splits) if f.splits else "none"
        raise DataSpecError(f"{fmt} has no split {spec.split!r} (splits: {have})")
    c = f.load(spec, run_dir)
    if not c.items:
        first = c.failures[0] if c.failures else None
        why = f"first error at {first.source}: {first.error}" if first else "no record was loaded"
        if spec.split and not first:
            why = f"no item of split {spec.split!r}"
        raise DataSpecError(
            f"{rest} is not in the {fmt} format ({f.usage}) or holds no usable record: {why}. "
            f"Formats: {', '.join(all_formats)}"
        )
    provenance = {
        "format": fmt,
        "path": str(spec.files[0].resolve()),
        "files": [str(p.resolve()) for p in spec.files],
        "image_dir": str(spec.image_dir.resolve()) if spec.image_dir else None,
        "split": spec.split,
        "skipped": dict(c.skipped),
    }
    return c.result(), provenance


def sniff(path: Path) -> str | None:
    """The benchmark format a file looks like (from its first record's fields), or None."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(64 << 20)
        rec = json.loads(first.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(rec, list) and rec and isinstance(rec[0], dict):
        rec = rec[0]
    if not isinstance(rec, dict):
        return None
    keys = set(rec)
    rules = [
        ("pope", {"question_id", "image", "text", "label"}),
        ("llava_bench", {"question_id", "image", "text", "category"}),
        ("vqav2", {"questions"}),
        ("vqav2", {"annotations"}),
        ("textvqa", {"data"}),
        ("hallusionbench", {"visual_input", "gt_answer", "filename"}),
        ("amber", {"id", "image", "query"}),
        ("counting", {"image_id", "question", "answer"}),
    ]
    return next((name for name, need in rules if need <= keys), None)
