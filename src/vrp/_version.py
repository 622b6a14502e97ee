"""The package version, in one place (the bottom layer: every module may read it)."""

__version__ = "0.1.0"
