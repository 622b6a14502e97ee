"""Lazy re-exports: a package's public names are imported on first use, so importing the
package stays light (the CLI reads config modules without loading torch or matplotlib)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) for ``package``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> ``"module"`` that defines it, or ``"module:attribute"`` where
            the public name differs from the attribute's.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = exports[name].partition(":")
        value = getattr(import_module(module), attr or name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__


def lazy_dir(package: str, exports: dict[str, str]) -> Callable[[], list[str]]:
    """A module-level ``__dir__`` listing ``package``'s own names and its lazy ``exports``."""

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __dir__
