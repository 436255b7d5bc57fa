"""Name -> family registry and construction from a run's configuration (:func:`build_family`), in the manner of
timm's ``create_model``."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

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


def build_family(cfg: Any, image_size: int, num_classes: int) -> Any:
    """Instantiate the family a run's configuration names, for ``image_size`` and ``num_classes``.

    ``cfg`` is a :class:`cxrgan.train.config.TrainConfig` (its ``model`` and ``loss`` sections are read); every
    ``model`` key that the family's constructor (or a base class's) accepts is passed on, a width left at 0 set for
    ``image_size`` (:meth:`cxrgan.train.config.ModelConfig.for_size`)."""
    m = cfg.model.for_size(image_size)
    cls = get_family(m.family)
    accepted = {name for klass in cls.__mro__ if "__init__" in vars(klass) for name in inspect.signature(klass.__init__).parameters}
    kwargs = dict(z_dim=m.z_dim, image_size=image_size, num_classes=num_classes, loss=cfg.loss.kind,
                  gp_weight=cfg.loss.gp_weight, r1_gamma=cfg.loss.r1_gamma, mode_seeking=cfg.loss.mode_seeking)
    kwargs.update({k: v for k, v in vars(m).items() if k in accepted and k not in ("family", "z_dim")})
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise CxrganError(f"model {m.family}: {exc}") from None


def _load_builtin() -> None:
    from . import bigan, cgan, dcgan, ddpm, dgm, gan, semicond  # noqa: F401  (each registers itself)
