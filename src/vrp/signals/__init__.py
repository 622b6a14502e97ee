"""Reliability signals: pure functions over captured arrays (no model imports here).

:mod:`vrp.signals.catalog` lists every per-item signal and per-layer curve with its compute
function and metadata; :func:`compute` returns all of them for one item.
"""

from vrp.signals.catalog import BY_NAME, CURVE_BY_NAME, CURVES, NAMES, SIGNALS, Curve, Signal, SignalResult, compute
from vrp.signals.inputs import SignalInputs

__all__ = [
    "BY_NAME",
    "CURVES",
    "CURVE_BY_NAME",
    "NAMES",
    "SIGNALS",
    "Curve",
    "Signal",
    "SignalInputs",
    "SignalResult",
    "compute",
]
