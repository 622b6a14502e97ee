"""A trained probe attached to a live model: answers with p(correct) and an abstention flag.

Example::

    import vrp

    monitor = vrp.Monitor.load("monitors/llava").attach(vrp.load("/models/llava-1.5-7b-hf"))
    answer = monitor.ask(image, "Is there a red circle?")  # Answer(text, p_correct, abstain, ...)

Names are imported on first use, so reading :mod:`vrp.monitor.config` does not load torch.
"""

from vrp._lazy import lazy_dir, lazy_getattr

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
