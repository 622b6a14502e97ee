"""The study spec: models x datasets and the options every run of the study shares."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from vrp.analysis.config import AnalyzeConfig
from vrp.config import TOY_MODELS, Config, ConfigError, RunConfig, from_dict
from vrp.interventions.config import KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class StudyConfig(Config):
    """A cross-family, cross-dataset study: every model on every dataset, one run each.

    Attributes:
        models: models to compare (shipped toy names or local model folders).
        datasets: data specs (as --data of vrp run), one run per model and dataset.
        samples: K answers sampled per item for self-consistency (0 = none).
        seed: seed of generated data, sampling, probes and resampling.
        limit: answer at most this many items of each dataset (None = all).
        world_images: images of the ShapesWorld set when a dataset is shapesworld without :N.
        store_layers: decoder blocks whose residuals and attention maps are stored: all, none or a
            comma list (the probes and the transfer matrix need the same blocks in every run of a family).
        batch_size: items per generate call.
        max_new_tokens: greedy answer length cap.
        device: torch device of every run.
        dtype: model dtype (float32, float16, bfloat16).
        intervene: vrp intervene kinds run on every run of the study (neurons, mass, mlp, heads,
            patches, patching); their headlines join the study tables.
        intervene_limit: items of each run the interventions re-answer (the first N in file
            order; None = all).
        engine: local (the runs one after another) or ray (runs spread over Ray workers, one model
            replica each).
        workers: Ray workers (engine ray).
        n_boot: bootstrap resamples of every CI of the study tables (and of each run's analysis).
        n_perm: permutations of every permutation p-value.
    """

    models: tuple[str, ...] = TOY_MODELS
    datasets: tuple[str, ...] = ("shapesworld",)
    samples: int = RunConfig.samples
    seed: int = RunConfig.seed
    limit: int | None = None
    world_images: int = RunConfig.world_images
    store_layers: str = RunConfig.store_layers
    batch_size: int = RunConfig.batch_size
    max_new_tokens: int = RunConfig.max_new_tokens
    device: str = RunConfig.device
    dtype: str = RunConfig.dtype
    intervene: tuple[str, ...] = ()
    intervene_limit: int | None = None
    engine: str = "local"
    workers: int = RunConfig.workers
    n_boot: int = AnalyzeConfig.n_boot
    n_perm: int = AnalyzeConfig.n_perm

    def check(self) -> None:
        self.require(
            (len(self.models) >= 1 and len(set(self.models)) == len(self.models),
             f"models must be one or more distinct models, got {self.models}"),
            (len(self.datasets) >= 1 and len(set(self.datasets)) == len(self.datasets),
             f"datasets must be one or more distinct data specs, got {self.datasets}"),
            (set(self.intervene) <= set(KINDS), f"intervene kinds must be among {', '.join(KINDS)}, got {self.intervene}"),
            (self.intervene_limit is None or self.intervene_limit >= 1,
             f"intervene_limit must be >= 1, got {self.intervene_limit}"),
            (self.engine in ("local", "ray"), f"engine must be 'local' or 'ray', got {self.engine!r}"),
            (self.n_boot >= 0 and self.n_perm >= 0, "n_boot and n_perm must be >= 0"),
        )  # fmt: skip
        for model, data in self.pairs():
            self.run_config(model, data, Path("."))  # every run's options are valid

    def pairs(self) -> list[tuple[str, str]]:
        """(model, dataset) of every run, models outermost."""
        return [(m, d) for m in self.models for d in self.datasets]

    def run_config(self, model: str, data: str, study_dir: Path) -> RunConfig:
        """The run of ``model`` on ``data`` inside the study directory."""
        shared = {f.name for f in fields(RunConfig)} & {f.name for f in fields(StudyConfig)}
        shared -= {"engine", "workers"}  # the study's engine spreads runs; each run itself is local
        return RunConfig(model=model, data=data, out=str(study_dir / "runs" / run_name(model, data)),
                         **{k: getattr(self, k) for k in sorted(shared)})  # fmt: skip

    def analyze_config(self) -> AnalyzeConfig:
        return AnalyzeConfig(n_boot=self.n_boot, n_perm=self.n_perm, seed=self.seed)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> StudyConfig:
        """Read a study spec: a TOML file whose top-level keys are the fields of this class
        (``models = [...]``, ``datasets = [...]``, ``samples = 10``, ...); ``overrides`` (not None)
        win over the file."""
        path = Path(path)
        try:
            spec = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read the study spec {path}: {e}") from None
        spec.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(cls, spec)


def _slug(text: str) -> str:
    name = Path(text).name if ("/" in text and ":" not in text.split("/")[0]) else text
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def run_name(model: str, data: str) -> str:
    """The run directory name of a (model, dataset) pair: readable and unique per pair."""
    import hashlib

    digest = hashlib.sha256(f"{model}\0{data}".encode()).hexdigest()[:6]
    return f"{_slug(model)}__{_slug(data)}__{digest}"
