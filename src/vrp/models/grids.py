"""Where an image's tokens sit in the prompt and how they tile the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageGrid:
    """Where one image's tokens sit in the prompt and how they tile the image.

    ``token_index`` are the prompt positions of the image's tokens in row-major grid order,
    so ``token_index[r * cols + c]`` is the token for patch (r, c).
    """

    rows: int
    cols: int
    token_index: np.ndarray  # [rows * cols] int, prompt positions (after left padding is removed)

    def __post_init__(self) -> None:
        if len(self.token_index) != self.rows * self.cols:
            raise ValueError(
                f"image grid {self.rows}x{self.cols} needs {self.rows * self.cols} tokens, got {len(self.token_index)}"
            )
