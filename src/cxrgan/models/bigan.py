"""``bigan``: bidirectional GAN (Donahue et al., 2017).

An encoder E maps images to latents; D judges ``(x, z)`` pairs: ``(x, E(x))`` is "real", ``(G(z), z)``
is "fake". G and E are trained together in the G phase to fool D on both kinds of pair, which makes E
approximately invert G. ``encode`` maps real images to latents. With ``model.unary`` D also scores the image
and the latent of each pair on their own (BigBiGAN); every loss then averages over the three verdicts.
``d_classes`` gives D's image trunk a class head trained on the real images' labels, and ``d_class_projection`` makes D
judge each pair against the class that head infers for its image (:mod:`.label_aware`); G stays unconditional, and
``g_class_share`` asks it, through that head, to draw the classes in the data's proportions.
"""

from __future__ import annotations

import torch

from . import losses
from ..nets.blocks import ConvEncoder, ConvGenerator, JointDiscriminator
from .base import Augment, Batch, Family
from .label_aware import LabelAwareD
from .registry import register


@register("bigan")
class BiGAN(LabelAwareD, Family):
    has_encoder = True
    phases = {"D": ("D",), "G": ("G", "E")}
    ema_modules = ("G", "E")

    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64, spectral_norm: bool = False, mbstd: bool = False, unary: bool = False,
                 d_classes: float = 0.0, d_class_projection: bool = False, g_class_share: float = 0.0, **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        head = self.init_label_head(d_classes, num_classes, g_class_share)
        self.G = ConvGenerator(z_dim, image_size, g_channels)
        self.E = ConvEncoder(image_size, z_dim, d_channels)
        self.D = JointDiscriminator(image_size, z_dim, d_channels, "none", spectral_norm, mbstd=mbstd, unary=unary,
                                    classes=head, class_projection=d_class_projection)

    def bind_data(self, data) -> None:
        self.bind_labels(data)

    def encode(self, x: torch.Tensor, E: torch.nn.Module | None = None) -> torch.Tensor:
        """Latents ``(N, z_dim)`` for images ``(N, 1, S, S)`` in [-1, 1]."""
        return (E or self.E)(x)

    def real_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        # Used by the D phase only, where E is not trained: no graph through E.
        with torch.no_grad():
            return (batch.x, self.E(batch.x))

    def fake_inputs(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.G(z), z)

    def discriminate(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        return self.D(inputs[0], inputs[1])

    def discriminate_features(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.D.score(inputs[0], inputs[1])

    @staticmethod
    def d_stats(loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if real_logits.dim() == 2:  # D also scored x and z alone: its accuracy is that of its verdict on the pair
            real_logits, fake_logits = real_logits[:, 0], fake_logits[:, 0]
        return Family.d_stats(loss, real_logits, fake_logits)

    def g_phase(self, batch: Batch, augment: Augment):
        y = batch.y
        z = self.train_z(len(y), y.device)
        fake = self.G(z)
        fake_logits, h = self.D.score(augment(fake), z)
        real_logits = self.D(augment(batch.x), self.E(batch.x))
        # G and E swap the labels: fakes should look real, real pairs should look fake.
        loss = losses.g_loss(self.loss_kind, fake_logits) + losses.g_loss(self.loss_kind, -real_logits)
        loss, stats = self.generator_terms(loss, {"g_loss": loss.detach()}, h)
        return self.with_mode_seeking(loss, stats, fake, z, y)
