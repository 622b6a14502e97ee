"""Options of ``vrp monitor export`` (light: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from vrp.config import Config

PROBES = ("probe_dense", "probe_sparse")
DEFAULT_TARGET_RISK = 0.1  # the threshold rule when neither target is given


@dataclass(frozen=True)
class ExportConfig(Config):
    """Options of ``vrp monitor export``.

    Attributes:
        probe: probe_dense (L2) or probe_sparse (L1), at the residual layer it was chosen at on validation.
        target_risk: abstain to reach this risk on validation (0.1 when neither target is given).
        target_coverage: instead: answer this fraction of validation items.
    """

    probe: str = "probe_dense"
    target_risk: float | None = None
    target_coverage: float | None = None

    def check(self) -> None:
        self.require(
            (
                self.target_risk is None or self.target_coverage is None,
                "give a target risk or a target coverage, not both",
            ),
            (self.probe in PROBES, f"probe must be one of {', '.join(PROBES)}, got {self.probe!r}"),
        )

    @property
    def rule(self) -> tuple[float | None, float | None]:
        """(target risk, target coverage) with the default applied: exactly one is set."""
        if self.target_risk is None and self.target_coverage is None:
            return DEFAULT_TARGET_RISK, None
        return self.target_risk, self.target_coverage
