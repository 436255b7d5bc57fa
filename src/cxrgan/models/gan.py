"""``gan``: the original fully connected GAN (Goodfellow et al., 2014)."""

from __future__ import annotations

from ..nets.blocks import MLPDiscriminator, MLPGenerator
from .base import Family
from .registry import register


@register("gan")
class GAN(Family):
    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, hidden: int = 256, spectral_norm: bool = False, **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        self.G = MLPGenerator(z_dim, image_size, hidden)
        self.D = MLPDiscriminator(image_size, hidden, spectral_norm)
