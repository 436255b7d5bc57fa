"""``dcgan``: Radford et al.'s deep convolutional GAN; depth follows the image size (32 to 256 px)."""

from __future__ import annotations

from ..nets.blocks import ConvDiscriminator, ConvGenerator
from .base import Family
from .registry import register


@register("dcgan")
class DCGAN(Family):
    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64, spectral_norm: bool = False, mbstd: bool = False, pack: int = 1, **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        self.G = ConvGenerator(z_dim, image_size, g_channels)
        self.D = ConvDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, mbstd=mbstd, pack=pack)
