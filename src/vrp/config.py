"""Options as frozen dataclasses: the one source of every default.

The CLI is a thin layer over these objects: its options take their defaults from the fields
here and their help text from the ``Attributes:`` section of each class docstring
(:func:`field_help`). Every config dataclass of the package validates its fields' declared
types on construction (:func:`validate_types`) and is built from a dict with :func:`from_dict`,
which rejects unknown keys.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Literal, Union


class ConfigError(ValueError):
    """An invalid or unknown configuration value."""


# ---- validation shared by every config dataclass ----------------------------------------


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is an instance of the annotation ``hint`` (the subset configs use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a valid float, a bool is not
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"validate_types does not know the annotation {hint!r}")


def validate_types(obj: Any, error: type[Exception] = ConfigError) -> None:
    """Check every field of the dataclass instance ``obj`` against its declared type.

    Handles ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``X | None``, ``Literal``,
    ``tuple[T, ...]``, fixed-length tuples, ``list[T]`` and ``dict[K, V]``; a bool is never
    taken for a number. An annotation it does not know is a ``TypeError`` (fail loudly).

    Raises:
        error: naming the class, the field, the declared type and the value given.
    """
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise error(
                f"{cls.__name__}.{f.name} must be {_type_name(hints[f.name])}, got {type(value).__name__} {value!r}"
            )


def check_keys(cls: type, d: dict, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` naming the keys of ``d`` that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise error(f"unknown {cls.__name__} keys: {sorted(unknown)}; known: {sorted(known)}")


def from_dict(cls: type, d: dict, error: type[Exception] = ConfigError) -> Any:
    """Build the config dataclass ``cls`` from a JSON-like dict: unknown keys are an error,
    and lists become tuples where the field is declared a tuple (JSON has no tuples)."""
    check_keys(cls, d, error)
    hints = typing.get_type_hints(cls)

    def tuple_typed(hint: Any) -> bool:
        return typing.get_origin(hint) is tuple or any(tuple_typed(a) for a in typing.get_args(hint))

    return cls(**{k: tuple(v) if isinstance(v, list) and tuple_typed(hints[k]) else v for k, v in d.items()})


def field_default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of the dataclass ``cls`` (ConfigError if it has none)."""
    f = {f.name: f for f in fields(cls)}.get(name)
    if f is None:
        raise ConfigError(f"{cls.__name__} has no field {name!r}")
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ConfigError(f"{cls.__name__}.{name} has no default")


def field_help(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of the class docstring
    (Google style: ``name: text``, continuation lines indented deeper), as one line."""
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes:\n(.*?)(?:\n\S|\Z)", doc, flags=re.S | re.M)
    out: dict[str, str] = {}
    if not m:
        return out
    name = None
    for line in m.group(1).splitlines():
        head = re.match(r"^ {4}(\w+): (.*)$", line)
        if head:
            name = head.group(1)
            out[name] = head.group(2).strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


class Config:
    """The base of every option dataclass of vrp (subclasses are frozen dataclasses).

    On construction the fields' declared types are checked (:func:`validate_types`), then the
    subclass's :meth:`check`; :meth:`from_dict` builds one from JSON, rejecting unknown keys.
    Errors are ``error`` (``ConfigError`` unless the subclass names another ``ValueError``).
    """

    error: ClassVar[type[Exception]] = ConfigError

    def __post_init__(self) -> None:
        validate_types(self, self.error)
        self.check()

    def check(self) -> None:
        """Range and consistency checks beyond the declared types (raise with :meth:`require`)."""

    def require(self, *checks: tuple[bool, str]) -> None:
        """Raise ``self.error`` with the message of the first ``(ok, message)`` that is not ok."""
        for ok, msg in checks:
            if not ok:
                raise self.error(msg)

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        """Build from a dict; unknown keys are an error, not silently dropped."""
        return from_dict(cls, d, cls.error)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- what one item is traced with ------------------------------------------------------

RHO_RULES = ("mass", "patches")
TOY_MODELS = ("toy-llava", "toy-paligemma", "toy-qwen2vl")  # the shipped toys (vrp.toys.checkpoints)
DEVICE = "cpu"  # the default torch device of every command
DTYPES = ("float32", "float16", "bfloat16")  # model dtypes and storage dtypes of recorded arrays


@dataclass(frozen=True)
class TraceConfig(Config):
    """What :func:`vrp.trace` records and computes for each item (and a run for each batch).

    Attributes:
        max_new_tokens: greedy answer length cap.
        samples: K answers sampled per item for self-consistency (0 = none).
        temperature: sampling temperature of the K samples.
        top_p: nucleus mass of the K samples.
        seed: seed of every sampled quantity: an item's K samples are seeded from (seed, item id).
        rho: attention mass (rule "mass") or patch fraction (rule "patches") kept for the
            component counts.
        rho_rule: "mass" (smallest patch set holding rho of the mass) or "patches" (the top
            rho fraction of patches, the reference code's rule).
        layers: decoder blocks recorded (0-based; None = all). The signals need all of them.
        batch_size: items per generate call.
        record_dtype: storage dtype of the recorded residuals and sub-block writes (float32,
            float16, bfloat16); attention and log-probabilities are always float32.
    """

    max_new_tokens: int = 10
    samples: int = 10
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    rho: float = 0.10
    rho_rule: str = "mass"
    layers: tuple[int, ...] | None = None
    batch_size: int = 16
    record_dtype: str = "float32"

    def check(self) -> None:
        self.require(
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.samples >= 0, f"samples must be >= 0, got {self.samples}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (0 < self.rho <= 1, f"rho must be in (0, 1], got {self.rho}"),
            (self.rho_rule in RHO_RULES, f"rho_rule must be 'mass' or 'patches', got {self.rho_rule!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.record_dtype in DTYPES,
                f"record_dtype must be one of {', '.join(DTYPES)}, got {self.record_dtype!r}",
            ),
        )


# ---- what a run computes -----------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything that determines what ``vrp run`` computes.

    Attributes:
        model: shipped toy name (toy-llava, toy-paligemma, toy-qwen2vl) or a local model folder
            written by save_pretrained.
        data: shapesworld, shapesworld:N, or [FORMAT:]PATH of a dataset on disk (docs/data.md).
        out: the run directory.
        limit: answer at most this many items (after loading, in file order).
        seed: seed of the generated data and of every sampled quantity.
        batch_size: items per generate call.
        max_new_tokens: greedy answer length cap.
        device: torch device string.
        dtype: model dtype (float32, float16, bfloat16).
        world_images: images in the default ShapesWorld set when data gives none.
        samples: K answers sampled per item for self-consistency (0 = none).
        temperature: sampling temperature of the K samples.
        top_p: nucleus mass of the K samples.
        rho: attention mass (rule mass) or patch fraction (rule patches) kept for the
            component counts.
        rho_rule: mass (smallest patch set holding rho of the mass) or patches (the top
            rho fraction of patches, the reference code's rule).
        store_layers: decoder blocks whose residuals and attention maps are stored in the
            shards: all, none, or a comma list such as 0,8,16,-1 (signals always use every layer).
        store_attention: stored attention maps: mean (head-averaged map per layer), heads (one
            map per head) or none.
        store_residuals: store the decision-position residual stream.
        engine: local (this process) or ray (one model replica per Ray worker).
        workers: Ray workers (engine ray only).
        shard_mb: size in MB (1e6 bytes) up to which the per-batch shards are merged when the
            run finishes or resumes (0 keeps one shard per batch).
        shard_items: most items one merged shard covers.
        nli_model: a local sequence-classification NLI checkpoint folder (e.g. a DeBERTa-MNLI):
            the K samples are clustered by bidirectional entailment for semantic_entropy and
            semantic_consistency (None: their clusters are the canonical answers).
    """

    model: str = "toy-llava"
    data: str = "shapesworld"
    out: str = "runs/default"
    limit: int | None = None
    seed: int = TraceConfig.seed
    batch_size: int = TraceConfig.batch_size
    max_new_tokens: int = TraceConfig.max_new_tokens
    device: str = DEVICE
    dtype: str = "float32"
    world_images: int = 300
    samples: int = TraceConfig.samples
    temperature: float = TraceConfig.temperature
    top_p: float = TraceConfig.top_p
    rho: float = TraceConfig.rho
    rho_rule: str = TraceConfig.rho_rule
    store_layers: str = "all"
    store_attention: str = "mean"
    store_residuals: bool = True
    engine: str = "local"
    workers: int = 2
    shard_mb: float = 256.0
    shard_items: int = 2048
    nli_model: str | None = None

    def check(self) -> None:
        self.trace_config()  # validates the fields it shares with TraceConfig
        self.require(
            (self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}"),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.world_images >= 1, f"world_images must be >= 1, got {self.world_images}"),
            (self.store_attention in ("mean", "heads", "none"),
             f"store_attention must be 'mean', 'heads' or 'none', got {self.store_attention!r}"),
            (self.engine in ("local", "ray"), f"engine must be 'local' or 'ray', got {self.engine!r}"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (self.shard_mb >= 0, f"shard_mb must be >= 0, got {self.shard_mb}"),
            (self.shard_items >= 1, f"shard_items must be >= 1, got {self.shard_items}"),
            (self.nli_model is None or self.samples >= 1,
             f"nli_model clusters the K sampled answers: it needs samples >= 1, got {self.samples}"),
        )  # fmt: skip
        _parse_layers(self.store_layers)

    # The per-item options a run hands to vrp.trace; the others keep TraceConfig's defaults
    # (every block recorded, in float32, as the signals need).
    TRACE_FIELDS = ("max_new_tokens", "samples", "temperature", "top_p", "seed", "rho", "rho_rule", "batch_size")

    def trace_config(self) -> TraceConfig:
        """The per-item options of this run, as :func:`vrp.trace` takes them."""
        return TraceConfig(**{name: getattr(self, name) for name in self.TRACE_FIELDS})

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
    OPERATIONAL = ("engine", "workers", "out", "shard_mb", "shard_items")


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


__all__ = [
    "DTYPES",
    "Config",
    "ConfigError",
    "RunConfig",
    "TraceConfig",
    "check_keys",
    "field_default",
    "field_help",
    "from_dict",
    "validate_types",
]
