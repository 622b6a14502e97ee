"""A trained probe attached to a live model: answers with p(correct) and an abstention flag.

Example::

    import vrp

    monitor = vrp.Monitor.load("monitors/llava").attach(vrp.load("/models/llava-1.5-7b-hf"))
    answer = monitor.ask(image, "Is there a red circle?")  # Answer(text, p_correct, abstain, ...)

Names are imported on first use, so reading :mod:`vrp.monitor.config` does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "Answer": "vrp.monitor.live",
    "ExportConfig": "vrp.monitor.config",
    "FORMAT": "vrp.monitor.files",
    "Monitor": "vrp.monitor.live",
    "MonitorError": "vrp.monitor.files",
    "choose_threshold": "vrp.monitor.thresholds",
    "export_monitor": "vrp.monitor.export",
    "read_monitor": "vrp.monitor.files",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vrp.monitor' has no attribute {name!r}")
