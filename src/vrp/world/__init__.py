"""ShapesWorld: the synthetic benchmark with exact ground truth, and the toy VLMs trained on it."""

from vrp.world.dataset import generate, write_dataset
from vrp.world.scene import WorldConfig

__all__ = ["WorldConfig", "generate", "write_dataset"]
