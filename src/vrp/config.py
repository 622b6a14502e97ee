"""Run options as frozen dataclasses: the CLI is a thin layer over these objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class ConfigError(ValueError):
    """An invalid or unknown configuration value."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines what ``vrp run`` computes.

    Attributes:
        model: a shipped toy name (toy-llava, toy-paligemma, toy-qwen2vl) or a local
            model directory written by ``save_pretrained``.
        data: ``shapesworld`` (generate the embedded default), ``shapesworld:N`` (N
            images), or ``[FORMAT:]PATH`` of a dataset on disk (see README "Data").
        out: the run directory.
        limit: answer at most this many items (after loading, in file order).
        seed: seed of the generated data and of every sampled quantity.
        batch_size: items per generate call.
        max_new_tokens: greedy answer length cap.
        device: torch device string.
        dtype: model dtype (float32, float16, bfloat16).
        world_images: images in the default ShapesWorld set when ``data`` gives none.
    """

    model: str = "toy-llava"
    data: str = "shapesworld"
    out: str = "runs/default"
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    max_new_tokens: int = 10
    device: str = "cpu"
    dtype: str = "float32"
    world_images: int = 300

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "str": str, "int | None": (int, type(None))}[f.type]
            if not isinstance(v, want) or isinstance(v, bool):
                raise ConfigError(f"{f.name} must be {f.type}, got {type(v).__name__} {v!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.world_images < 1:
            raise ConfigError(f"world_images must be >= 1, got {self.world_images}")

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown RunConfig keys: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
