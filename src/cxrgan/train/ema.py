"""Exponential moving average of generator (and encoder) weights, used for sampling when present."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copies of ``modules``; ``update`` after each G step. Early on the decay is warmed up
    (``min(decay, (1 + step) / (10 + step))``) so the average is not dominated by the random init."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for name, m in modules.items():
            s = self.shadow[name]
            for p_s, p in zip(s.parameters(), m.parameters()):
                p_s.lerp_(p.detach(), 1.0 - d)
            for b_s, b in zip(s.buffers(), m.buffers()):
                b_s.copy_(b)
