"""A trained probe attached to a live model: answers with p(correct) and an abstention flag.

Example::

    from vrp.monitor import Monitor

    monitor = Monitor.load("monitors/llava").attach(model, processor)
    answer = monitor.ask(image, "Is there a red circle?")  # Answer(text, p_correct, abstain, ...)
"""

from vrp.monitor.export import export_monitor
from vrp.monitor.files import FORMAT, MonitorError, read_monitor
from vrp.monitor.live import Answer, Monitor
from vrp.monitor.thresholds import choose_threshold

__all__ = ["FORMAT", "Answer", "Monitor", "MonitorError", "choose_threshold", "export_monitor", "read_monitor"]
