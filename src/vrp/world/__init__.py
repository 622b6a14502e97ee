"""ShapesWorld: the synthetic benchmark with exact ground truth (scenes, questions, datasets).

A data source at the bottom of the package: the toy VLMs trained on it live in :mod:`vrp.toys`.
"""

from vrp.world.dataset import generate, write_dataset
from vrp.world.scene import WorldConfig

__all__ = ["WorldConfig", "generate", "write_dataset"]
