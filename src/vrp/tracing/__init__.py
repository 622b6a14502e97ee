"""The public tracing API: :func:`trace` answers questions about images and returns one
:class:`Trace` per item (attention over the patch grid, residual stream, logit lens, signals)."""

from vrp.tracing.tracer import Trace, trace, trace_batch

__all__ = ["Trace", "trace", "trace_batch"]
