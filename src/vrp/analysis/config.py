"""Options of ``vrp probe`` and ``vrp analyze`` (light: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vrp.config import ConfigError, from_dict, validate_types

CS = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class ProbeConfig:
    """Options of ``vrp probe``.

    Attributes:
        seed: seed of the split and of every probe.
        fractions: train / validation / test fractions of the items (grouped by image).
        cs: the inverse-regularization grid searched on validation for the logistic probes.
        stacked_k: layers concatenated by the stacked probe (the last k stored layers).
        mlp_hidden: hidden units of the MLP probe.
        trees: estimators of the attention-feature ensembles.
        max_iter: solver iterations of the logistic probes.
    """

    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    cs: tuple[float, ...] = CS
    stacked_k: int = 5
    mlp_hidden: int = 256
    trees: int = 200
    max_iter: int = 1000

    def __post_init__(self) -> None:
        validate_types(self)
        if not (all(f > 0 for f in self.fractions) and abs(sum(self.fractions) - 1) < 1e-9):
            raise ConfigError(f"fractions must be three positive numbers summing to 1, got {self.fractions}")
        if not self.cs or any(c <= 0 for c in self.cs):
            raise ConfigError(f"cs must be positive values, got {self.cs}")
        for name in ("stacked_k", "mlp_hidden", "trees", "max_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> ProbeConfig:
        return from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AnalyzeConfig:
    """Options of ``vrp analyze``.

    Attributes:
        n_boot: bootstrap resamples of each CI.
        n_perm: permutations of each p-value.
        level: confidence level of the intervals.
        seed: seed of the resampling.
        ece_bins: bins of the expected calibration error.
    """

    n_boot: int = 10_000
    n_perm: int = 10_000
    level: float = 0.95
    seed: int = 0
    ece_bins: int = 15

    def __post_init__(self) -> None:
        validate_types(self)
        if self.n_boot < 0 or self.n_perm < 0:
            raise ConfigError(f"n_boot and n_perm must be >= 0, got {self.n_boot}, {self.n_perm}")
        if not 0 < self.level < 1:
            raise ConfigError(f"level must be in (0, 1), got {self.level}")
        if self.ece_bins < 1:
            raise ConfigError(f"ece_bins must be >= 1, got {self.ece_bins}")

    @classmethod
    def from_dict(cls, d: dict) -> AnalyzeConfig:
        return from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)
