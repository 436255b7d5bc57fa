"""``cgan``: conditional GAN (Mirza & Osindero, 2014) on the DCGAN backbone.

G gets per-class modulation of its batch norms (``g_cond: cbn``, the family's default in ``configs/cgan.yaml``)
or a learned class embedding concatenated to z (``g_cond: concat``); D is conditioned by projection (default) or by concatenating one-hot label planes
to the image (``cond_d: concat``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets.blocks import ConvDiscriminator, ConvGenerator
from .base import Family
from .registry import register


class ClassModulation(nn.Module):
    """A per-class scale and shift of the channels after a batch norm (the class-conditional part of BigGAN's
    conditional batch norm): ``h * (1 + gain[y]) + bias[y]``, zero at initialisation. The class indices of the
    batch are set by the generator before each forward (``y``)."""

    def __init__(self, num_classes: int, channels: int) -> None:
        super().__init__()
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        self.y: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.y is None:
            raise RuntimeError("ClassModulation needs the batch's class indices (set by ConditionalGenerator)")
        return h * (1 + self.gain(self.y)[:, :, None, None].to(h.dtype)) + self.bias(self.y)[:, :, None, None].to(h.dtype)


class ConditionalGenerator(nn.Module):
    """``(z, y)`` -> image on the DCGAN generator. ``cond``: ``concat`` feeds ``[z, embed(y)]`` to the first layer;
    ``cbn`` feeds z alone and modulates every batch-normalized layer per class (BigGAN), so the first batch norm
    normalizes the variation that z makes rather than the offset between classes."""

    def __init__(self, z_dim: int, num_classes: int, size: int, base: int, embed_dim: int, cond: str = "concat") -> None:
        super().__init__()
        self.cond = cond
        if cond == "concat":
            self.embed = nn.Embedding(num_classes, embed_dim)
            self.net = ConvGenerator(z_dim + embed_dim, size, base)
            return
        self.net = ConvGenerator(z_dim, size, base)
        layers: list[nn.Module] = []
        for m in self.net.net:
            layers.append(m)
            if isinstance(m, nn.BatchNorm2d):
                layers.append(ClassModulation(num_classes, m.num_features))
        self.net.net = nn.Sequential(*layers)
        self.modulations = [m for m in layers if isinstance(m, ClassModulation)]  # a plain list: registered once, in net

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cond == "concat":
            return self.net(torch.cat([z, self.embed(y)], dim=1))
        for m in self.modulations:
            m.y = y
        try:
            return self.net(z)
        finally:
            for m in self.modulations:
                m.y = None


@register("cgan")
class CGAN(Family):
    conditional = True

    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64, spectral_norm: bool = False, cond_d: str = "projection", embed_dim: int = 32, mbstd: bool = False, mbstd_by_class: bool = False, g_cond: str = "concat", **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        if num_classes < 2:
            raise ValueError("cgan needs at least two classes")
        if cond_d not in ("projection", "concat"):
            raise ValueError(f"cond_d must be projection or concat, got {cond_d!r}")
        if g_cond not in ("concat", "cbn"):
            raise ValueError(f"g_cond must be concat or cbn, got {g_cond!r}")
        self.G = ConditionalGenerator(z_dim, num_classes, image_size, g_channels, embed_dim, g_cond)
        self.D = ConvDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, num_classes, cond_d, mbstd,
                                   mbstd_by_class)

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, G: nn.Module | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("cgan.generate needs class indices y")
        return (G or self.G)(z, y)
