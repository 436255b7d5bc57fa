"""Exponential moving average of generator (and encoder) weights, used for sampling when present.

Batch norm and weight averaging: the live network's running statistics belong to the live weights, not to
their average, so an averaged generator that borrows them draws blurred, shifted images (measured on real
radiographs: FD 4.45 with borrowed statistics, 2.17 with its own, for the same averaged CGAN weights).
:meth:`EMA.recalibrate` recomputes the shadow's statistics for its own weights ("standing statistics") and
the loop calls it before every sample grid, quality evaluation and checkpoint.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class EMA:
    """Shadow copies of ``modules``; ``update`` after each G step. Early on the decay is warmed up
    (``min(decay, (1 + step) / (warmup + step))``) so the average is not dominated by the random init; it then
    spans about ``step / (warmup - 1)`` steps."""

    def __init__(self, modules: dict[str, nn.Module], decay: float, warmup: float = 10.0) -> None:
        self.decay = decay
        self.warmup = warmup
        self.shadow = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        """Move the shadow weights towards ``modules``' and copy their buffers: one multi-tensor operation each
        (``torch._foreach_*``: a few kernel launches on a GPU instead of one per tensor; the same arithmetic)."""
        d = min(self.decay, (1.0 + step) / (self.warmup + step))
        shadow_p, live_p, shadow_b, live_b = [], [], [], []
        for name, m in modules.items():
            s = self.shadow[name]
            shadow_p += list(s.parameters())
            live_p += [p.detach() for p in m.parameters()]
            shadow_b += list(s.buffers())
            live_b += list(m.buffers())
        if shadow_p:
            torch._foreach_lerp_(shadow_p, live_p, 1.0 - d)
        if shadow_b:
            torch._foreach_copy_(shadow_b, live_b)

    @torch.no_grad()
    def recalibrate(self, name: str, inputs: Iterable[object], forward: Callable[[nn.Module, object], object]) -> None:
        """Recompute the batch-norm running statistics of ``shadow[name]`` for its averaged weights.

        ``forward(module, item)`` runs the module on each item of ``inputs`` (training-sized batches); the
        statistics become the plain average over them. Uses no random numbers, so exact resume is unaffected."""
        module = self.shadow[name]
        norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        module.train()
        try:
            for item in inputs:
                forward(module, item)
        finally:
            module.eval()
            for m, mom in zip(norms, momenta):
                m.momentum = mom
