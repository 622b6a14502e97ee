"""Options of ``vrp probe`` and ``vrp analyze`` (light: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from vrp.analysis.detachment import DetachmentConfig
from vrp.config import Config

CS = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class ProbeConfig(Config):
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

    def check(self) -> None:
        self.require(
            (all(f > 0 for f in self.fractions) and abs(sum(self.fractions) - 1) < 1e-9,
             f"fractions must be three positive numbers summing to 1, got {self.fractions}"),
            (bool(self.cs) and all(c > 0 for c in self.cs), f"cs must be positive values, got {self.cs}"),
            *((getattr(self, n) >= 1, f"{n} must be >= 1, got {getattr(self, n)}")
              for n in ("stacked_k", "mlp_hidden", "trees", "max_iter")),
        )  # fmt: skip


@dataclass(frozen=True)
class AnalyzeConfig(Config):
    """Options of ``vrp analyze``.

    Attributes:
        n_boot: bootstrap resamples of each CI.
        n_perm: permutations of each p-value.
        level: confidence level of the intervals.
        seed: seed of the resampling.
        ece_bins: bins of the expected calibration error.
        units_top: sparse-circuit view: the top units by |coefficient| listed per layer (analysis/units.parquet).
        units_layers: sparse-circuit view: residual layers listed besides the sparse probe's chosen one.
        detach_focus_quantile: symbolic detachment: a focused item's region ratio is at least this quantile of the run's.
        detach_entropy_quantile: symbolic detachment: a focused item's spatial entropy is at most this quantile.
        detach_miss_quantile: symbolic detachment: a missed item's region ratio is at most this quantile.
        detach_miss_rule: symbolic detachment: what makes an item missed: argmax, ratio, either or both.
        detach_block: symbolic detachment: the decoder block read (None: the last block).
    """

    n_boot: int = 10_000
    n_perm: int = 10_000
    level: float = 0.95
    seed: int = 0
    ece_bins: int = 15
    units_top: int = 10
    units_layers: tuple[int, ...] | None = None
    detach_focus_quantile: float = DetachmentConfig.focus_quantile
    detach_entropy_quantile: float = DetachmentConfig.entropy_quantile
    detach_miss_quantile: float = DetachmentConfig.miss_quantile
    detach_miss_rule: str = DetachmentConfig.miss_rule
    detach_block: int | None = DetachmentConfig.block

    def detachment(self) -> DetachmentConfig:
        """The symbolic-detachment thresholds (vrp.analysis.detachment) these options set."""
        return DetachmentConfig(focus_quantile=self.detach_focus_quantile, entropy_quantile=self.detach_entropy_quantile,
                                miss_quantile=self.detach_miss_quantile, miss_rule=self.detach_miss_rule,
                                block=self.detach_block)  # fmt: skip

    def check(self) -> None:
        self.require(
            (
                self.n_boot >= 0 and self.n_perm >= 0,
                f"n_boot and n_perm must be >= 0, got {self.n_boot}, {self.n_perm}",
            ),
            (0 < self.level < 1, f"level must be in (0, 1), got {self.level}"),
            (self.ece_bins >= 1, f"ece_bins must be >= 1, got {self.ece_bins}"),
            (self.units_top >= 1, f"units_top must be >= 1, got {self.units_top}"),
        )
        self.detachment()  # its own checks, e.g. quantiles in [0, 1] and a known miss rule
