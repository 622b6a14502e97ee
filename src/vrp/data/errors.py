"""Errors of the data layer (kept apart so loaders and spec resolution can share them)."""

from __future__ import annotations


class DataSpecError(ValueError):
    """A --data value that names no known format or no readable file."""
