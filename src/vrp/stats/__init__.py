"""Statistics over arrays: intervals, bootstrap, tests (no model imports)."""

from vrp.stats.intervals import wilson_ci

__all__ = ["wilson_ci"]
