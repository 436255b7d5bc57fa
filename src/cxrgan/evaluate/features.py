"""A fixed feature space for training-time quality and diversity figures.

ImageNet Inception weights cannot be downloaded here and are a poor judge of radiographs anyway. Until a
trained radiograph extractor is available, training monitors use a *fixed random* convolutional network:
weights drawn once from a seeded generator (version ``FEATURES_VERSION``), global-average-pooled at three
depths. Random convolutional features capture intensity, texture and structure statistics well enough to
rank generators and to detect collapse; the figures are comparable across runs of the same image size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


FEATURES_VERSION = "randconv-v1"


class RandomConvFeatures(nn.Module):
    """``(N, 1, S, S)`` in [-1, 1] -> ``(N, 224)`` features; deterministic for a given version."""

    def __init__(self, seed: int = 20260101) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [1, 32, 64, 128]
        self.convs = nn.ModuleList()
        for a, b in zip(chans[:-1], chans[1:]):
            conv = nn.Conv2d(a, b, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (a * 9)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activation maps of the three stages (full, half and quarter resolution) for ``x``."""
        maps = []
        h = x.float()
        for i, conv in enumerate(self.convs):
            h = torch.relu(conv(h))
            maps.append(h)
            if i < len(self.convs) - 1:
                h = nn.functional.avg_pool2d(h, 2)
        return maps

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.mean(dim=(2, 3)) for h in self.stages(x)], dim=1)

    def embed(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Features of many images, in batches, as float64 numpy ``(N, 224)``."""
        dev = next(self.parameters()).device
        out = [self(images[i : i + batch].to(dev)).double().cpu().numpy() for i in range(0, len(images), batch)]
        return np.concatenate(out)
