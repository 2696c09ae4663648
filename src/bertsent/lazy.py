"""Packages whose public names are imported on first use (PEP 562): `import bertsent` and the command line's
start stay free of torch and transformers, and each name still comes from one place (transformers' lazy
module does the same)."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable


class LazyPackage(types.ModuleType):
    """A package whose exports (name -> the module defining it, or a function computing it) load when first
    read. A function keeps its name over a submodule of that name (`bertsent.workflows.audit`, `bertsent.training.fit`
    are the functions): importing the submodule, which sets it on its package, would otherwise replace it."""

    _exports: dict[str, str | Callable[[], object]]

    def __getattr__(self, name: str):
        if name not in self._exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        source = self._exports[name]
        value = source() if callable(source) else getattr(importlib.import_module(source), name)
        types.ModuleType.__setattr__(self, name, value)  # read once
        return value

    def __setattr__(self, name: str, value) -> None:
        if not (name in self._exports and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._exports})


def make_lazy(package: str, exports: dict[str, str | Callable[[], object]]) -> None:
    """Turn the package `package` (its __init__ calls this with __name__) into a LazyPackage of `exports`."""
    module = sys.modules[package]
    module.__dict__["_exports"] = exports  # a plain module's attribute, read once its class is LazyPackage
    module.__class__ = LazyPackage
