"""The offline HTML report of a run directory (``vrp report``); never touches a model.

Names are imported on first use, so reading :mod:`vrp.report.config` does not load matplotlib.
"""

from importlib import import_module

_EXPORTS = {"build_report": "vrp.report.build", "ReportConfig": "vrp.report.config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vrp.report' has no attribute {name!r}")
