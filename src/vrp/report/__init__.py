"""The offline HTML report of a run directory (``vrp report``); never touches a model.

Names are imported on first use, so reading :mod:`vrp.report.config` does not load matplotlib.
"""

from vrp._lazy import lazy_dir, lazy_getattr

_EXPORTS = {"build_report": "vrp.report.build", "ReportConfig": "vrp.report.config"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
