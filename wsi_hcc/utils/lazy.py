"""Package APIs loaded on first use: importing one stage package never imports its siblings' heavy
dependencies (torch, numba, albumentations), and an ``__init__`` adds no import edges between layers."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package: str, api: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public names live in its modules:
    ``api`` maps each name to the module (relative to ``package``) that defines it."""

    def __getattr__(name: str) -> object:
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{api[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(api)

    return __getattr__, __dir__
