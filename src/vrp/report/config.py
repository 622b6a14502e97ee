"""Options of ``vrp report`` (light: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from vrp.config import Config


@dataclass(frozen=True)
class ReportConfig(Config):
    """Options of ``vrp report``.

    Attributes:
        layer: decoder block of the case studies' attention overlays (None = the last stored).
        n_cases: case studies: half most confident wrong answers, half least confident right ones.
    """

    layer: int | None = None
    n_cases: int = 6

    def check(self) -> None:
        self.require((self.n_cases >= 0, f"n_cases must be >= 0, got {self.n_cases}"))
