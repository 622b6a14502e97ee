"""The offline HTML report of a run directory (``vrp report``); never touches a model."""

from vrp.report.build import build_report

__all__ = ["build_report"]
