"""Name -> family registry (``create_family("dcgan", ...)``), in the manner of timm's ``create_model``."""

from __future__ import annotations

from typing import Callable, TypeVar

from ..errors import CxrganError

_FAMILIES: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator adding a family under ``name``."""

    def deco(cls: T) -> T:
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} registered twice")
        _FAMILIES[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def family_names() -> list[str]:
    _load_builtin()
    return sorted(_FAMILIES)


def get_family(name: str) -> type:
    _load_builtin()
    if name not in _FAMILIES:
        raise CxrganError(f"unknown model {name!r}; available: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def _load_builtin() -> None:
    from . import bigan, cgan, dcgan, dgm, gan, semicond  # noqa: F401  (each registers itself)
