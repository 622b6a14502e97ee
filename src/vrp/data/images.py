"""Opening images the way every part of vrp does: fully decoded, RGB, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs beyond this many pixels


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB.

    Raises:
        ValueError: the file is missing, unreadable, truncated, not an image, or larger than
            ``MAX_IMAGE_PIXELS`` (the message names the file and the reason).
    """
    path = str(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"image is {w}x{h} = {w * h} pixels, over the {MAX_IMAGE_PIXELS} limit")
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def as_image(image: Any) -> Image.Image:
    """An RGB PIL image from a path (opened with :func:`open_image`) or a PIL image
    (converted to RGB as a file would be)."""
    if isinstance(image, str | Path):
        return open_image(image)
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    raise TypeError(f"an image must be a file path or a PIL image, got {type(image).__name__}")
