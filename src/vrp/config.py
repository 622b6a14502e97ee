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
        samples: K answers sampled per item for self-consistency (0 = none).
        temperature: sampling temperature of the K samples.
        top_p: nucleus mass of the K samples.
        rho: attention mass (rule "mass") or patch fraction (rule "patches") kept for the
            component counts.
        rho_rule: "mass" (smallest patch set holding rho of the mass) or "patches" (the top
            rho fraction of patches, the reference code's rule).
        store_layers: decoder blocks whose residuals and attention maps are stored in the
            shards: "all", "none", or a comma list such as "0,8,16,-1" (signals always use
            every layer).
        store_attention: "mean" (head-averaged map per layer), "heads" (one map per head)
            or "none".
        store_residuals: store the decision-position residual stream.
        engine: "local" (this process) or "ray" (one model replica per Ray worker).
        workers: Ray workers (engine "ray" only).
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
    samples: int = 10
    temperature: float = 0.7
    top_p: float = 0.9
    rho: float = 0.10
    rho_rule: str = "mass"
    store_layers: str = "all"
    store_attention: str = "mean"
    store_residuals: bool = True
    engine: str = "local"
    workers: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "str": str, "float": (int, float), "bool": bool, "int | None": (int, type(None))}[
                f.type
            ]
            if not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool"):
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
        if self.samples < 0:
            raise ConfigError(f"samples must be >= 0, got {self.samples}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.rho <= 1:
            raise ConfigError(f"rho must be in (0, 1], got {self.rho}")
        if self.rho_rule not in ("mass", "patches"):
            raise ConfigError(f"rho_rule must be 'mass' or 'patches', got {self.rho_rule!r}")
        if self.store_attention not in ("mean", "heads", "none"):
            raise ConfigError(f"store_attention must be 'mean', 'heads' or 'none', got {self.store_attention!r}")
        _parse_layers(self.store_layers)
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def stored_layers(self, n_layers: int) -> list[int]:
        """The decoder block indices ``store_layers`` names for a model with ``n_layers`` blocks."""
        idx = _parse_layers(self.store_layers)
        if idx is None:
            return list(range(n_layers))
        out = set()
        for i in idx:
            j = i + n_layers if i < 0 else i
            if not 0 <= j < n_layers:
                raise ConfigError(f"store_layers index {i} is outside the model's {n_layers} decoder blocks")
            out.add(j)
        return sorted(out)

    # Fields that change how the work is spread, never what it computes: a run may be
    # resumed with different values.
    OPERATIONAL = ("engine", "workers", "out")

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a dict; unknown keys are an error, not silently dropped."""
        check_keys(cls, d, ConfigError)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def check_keys(cls: type, d: dict, error: type[Exception]) -> None:
    """Raise ``error`` naming the keys of ``d`` that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise error(f"unknown {cls.__name__} keys: {sorted(unknown)}; known: {sorted(known)}")


def _parse_layers(spec: str) -> list[int] | None:
    """``"all"`` -> None, ``"none"`` -> [], ``"0,8,-1"`` -> [0, 8, -1]; ConfigError otherwise."""
    spec = spec.strip()
    if spec == "all":
        return None
    if spec == "none":
        return []
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise ConfigError(f"store_layers must be 'all', 'none' or a comma list of ints, got {spec!r}") from None
