"""``cgan``: conditional GAN (Mirza & Osindero, 2014) on the DCGAN backbone.

G gets a learned class embedding concatenated to z; D is conditioned by projection (default) or by
concatenating one-hot label planes to the image (``cond_d: concat``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets.blocks import ConvDiscriminator, ConvGenerator
from .base import Family
from .registry import register


class ConditionalGenerator(nn.Module):
    """``(z, y)`` -> image: DCGAN generator on ``[z, embed(y)]``."""

    def __init__(self, z_dim: int, num_classes: int, size: int, base: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = ConvGenerator(z_dim + embed_dim, size, base)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(y)], dim=1))


@register("cgan")
class CGAN(Family):
    conditional = True

    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64, spectral_norm: bool = False, cond_d: str = "projection", embed_dim: int = 32, mbstd: bool = False, mbstd_by_class: bool = False, **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        if num_classes < 2:
            raise ValueError("cgan needs at least two classes")
        if cond_d not in ("projection", "concat"):
            raise ValueError(f"cond_d must be projection or concat, got {cond_d!r}")
        self.G = ConditionalGenerator(z_dim, num_classes, image_size, g_channels, embed_dim)
        self.D = ConvDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, num_classes, cond_d, mbstd,
                                   mbstd_by_class)

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, G: nn.Module | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("cgan.generate needs class indices y")
        return (G or self.G)(z, y)
