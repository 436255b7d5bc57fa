"""cxrgan: generative adversarial networks for chest X-ray synthesis, augmentation and decomposition.

The stages, each a function here and a CLI verb: ``prepare`` (sources -> prepared dataset), ``train``
(dataset -> run directory), ``sample`` (run -> synthetic set), ``compare`` (runs -> comparative study).
Heavy modules (torch) are imported on first use, so ``import cxrgan`` is cheap.
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["__version__", "prepare", "PreparedDataset", "train", "sample", "compare", "CxrganError"]


def __getattr__(name: str) -> Any:
    if name in ("prepare", "PreparedDataset"):
        from . import data

        return getattr(data, name)
    if name == "CxrganError":
        from .errors import CxrganError

        return CxrganError
    if name == "train":
        return _train_with_curves
    if name == "sample":
        from .sample import sample

        return sample
    if name == "compare":
        from .report.compare import compare

        return compare
    raise AttributeError(f"module 'cxrgan' has no attribute {name!r}")


def _train_with_curves(cfg: Any, out: Any, **kwargs: Any) -> Any:
    """:func:`cxrgan.train.loop.train`, drawing the run's training curves into ``RUN/plots/`` when it ends (as
    ``cxrgan train`` does) unless ``on_end`` is given."""
    from .report.plots import plot_run
    from .train.loop import train

    kwargs.setdefault("on_end", plot_run)
    return train(cfg, out, **kwargs)
