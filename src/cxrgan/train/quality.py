"""Training-time quality and diversity: Fréchet distance and mean pairwise distance in a fixed feature space,
on a fixed set of latents, next to the same diversity figure on real images."""

from __future__ import annotations

import numpy as np
import torch

from ..evaluate.distribution import frechet_distance, mean_pairwise_distance
from ..evaluate.features import RandomConvFeatures
from .data import TrainData, to_model_range

DIVERSITY_BATCH = 128


class QualityMonitor:
    """Holds real-image statistics and fixed latents; ``evaluate`` scores a generator on them."""

    def __init__(self, data: TrainData, n: int, z_dim: int, seed: int, device: torch.device) -> None:
        g = np.random.default_rng([seed, 99])
        rows = np.sort(g.choice(len(data), size=min(n, len(data)), replace=False))
        self.device = device
        self.features = RandomConvFeatures().to(device)
        real = to_model_range(torch.from_numpy(data.uint8(rows)))
        self.real_feats = self.features.embed(real)
        self.diversity_real = mean_pairwise_distance(self.real_feats[:DIVERSITY_BATCH])
        gen = torch.Generator().manual_seed(seed * 1000 + 17)
        self.z = torch.randn(len(rows), z_dim, generator=gen)
        self.y = torch.from_numpy(data.labels[rows])

    @torch.no_grad()
    def evaluate(self, generate) -> dict[str, float]:
        """``generate(z, y) -> images`` in [-1, 1]; returns fd, diversity, diversity_real."""
        fakes = torch.cat([generate(self.z[i : i + 256].to(self.device), self.y[i : i + 256].to(self.device)).float().cpu()
                           for i in range(0, len(self.z), 256)])
        feats = self.features.embed(fakes)
        return {
            "fd": frechet_distance(feats, self.real_feats),
            "diversity": mean_pairwise_distance(feats[:DIVERSITY_BATCH]),
            "diversity_real": self.diversity_real,
        }
