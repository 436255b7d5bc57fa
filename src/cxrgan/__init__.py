"""cxrgan: generative adversarial networks for chest X-ray synthesis, augmentation and decomposition.

The stages, each a function and a CLI verb: ``cxrgan.prepare`` (sources -> prepared dataset),
``cxrgan.train.loop.train`` (dataset -> run directory), ``cxrgan.sample.sample`` (run -> synthetic set),
``cxrgan.compare`` (runs -> comparative study). ``train`` and ``sample`` are reached through their modules: the
names ``cxrgan.train`` and ``cxrgan.sample`` are the subpackage and the module. Heavy modules (torch) are imported
on first use, so ``import cxrgan`` is cheap.
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["__version__", "prepare", "PreparedDataset", "compare", "CxrganError"]


def __getattr__(name: str) -> Any:
    if name in ("prepare", "PreparedDataset"):
        from . import data

        return getattr(data, name)
    if name == "CxrganError":
        from .errors import CxrganError

        return CxrganError
    if name == "compare":
        from .report.compare import compare

        return compare
    raise AttributeError(f"module 'cxrgan' has no attribute {name!r}")

