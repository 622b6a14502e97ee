"""vrp, the VLM Reliability Probe."""

from vrp.config import RunConfig
from vrp.data.items import Item

__version__ = "0.1.0"
__all__ = ["Item", "RunConfig", "__version__"]
