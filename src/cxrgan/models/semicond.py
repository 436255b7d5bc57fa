"""``semicond``: semi-conditional generation steered by latent codes drawn from chosen distributions.

The generator is the conditional one of ``cgan`` on ``[z, codes, embed(y)]``, where ``codes`` are blocks drawn
from Bernoulli, exponential, uniform or normal distributions (see :mod:`cxrgan.models.codes`). The
discriminator scores real/fake (projection on the class, as in ``cgan``) and has two heads on its features:
one predicts the code blocks of a generated image, one its class. Following the semi-conditional study, a mean squared
error between predicted and sampled codes (not a mutual-information bound) trains both the code head (D
phase) and the generator (G phase); the class head learns on real images and the generator is asked to make
images that it classifies as their label. ``code_weight`` and ``class_weight`` scale those terms. The family's
preset sets ``class_weight`` to 0: that auxiliary-classifier term narrowed each class's samples on real radiographs
(``configs/semicond.yaml``), and the projection discriminator conditions on the class without it.

The squared error is taken on standardized codes (each dimension divided by its marginal's standard deviation):
with raw codes a Bernoulli(0.5) dimension (variance 0.25) and a uniform(-1, 1) one (1/3) weigh a quarter and a
third of a normal one, and on real radiographs the generator learned to ignore them (Bernoulli recovery 0.54,
uniform R^2 0.46 after 2000 steps, against 0.82 for the normal block).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from ..nets.blocks import ConvDiscriminator
from .base import Augment, Batch
from .cgan import CGAN, ConditionalGenerator
from .codes import DEFAULT_CODES, CodeSpace
from .registry import register

RECOVERY_SAMPLES = 1024


class CodeDiscriminator(nn.Module):
    """A conditional DCGAN discriminator with a code head and a class head on its trunk features."""

    def __init__(self, size: int, base: int, norm: str, sn: bool, num_classes: int, cond: str, mbstd: bool, code_dim: int,
                 hidden: int = 256) -> None:
        super().__init__()
        self.adv = ConvDiscriminator(size, base, norm, sn, num_classes, cond, mbstd)
        feat = self.adv.trunk.out_channels * 16
        # Layer norm first: a spectrally normalized trunk emits small features that plain heads learn from slowly
        # (measured on phantoms: class loss still at chance after 240 steps without it).
        self.shared = nn.Sequential(nn.Flatten(), nn.LayerNorm(feat), nn.Linear(feat, hidden), nn.LeakyReLU(0.2, True))
        self.codes = nn.Linear(hidden, code_dim)
        self.classes = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.adv(x, y)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Real/fake logits ``(N,)``, predicted standardized codes ``(N, code_dim)`` and class logits ``(N, classes)``."""
        logit, h = self.adv.score(x, y)
        shared = self.shared(h.float())
        return logit, self.codes(shared), self.classes(shared)


@register("semicond")
class SemiConditional(CGAN):
    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64,
                 spectral_norm: bool = False, cond_d: str = "projection", embed_dim: int = 32, mbstd: bool = False,
                 codes: Sequence[str] = tuple(DEFAULT_CODES), code_correlation: float = 0.0, code_weight: float = 1.0,
                 class_weight: float = 1.0, g_cond: str = "concat", **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, g_channels=g_channels,
                         d_channels=d_channels, spectral_norm=spectral_norm, cond_d=cond_d, embed_dim=embed_dim, mbstd=mbstd,
                         g_cond=g_cond, **kw)
        self.code_space = CodeSpace(list(codes), code_correlation)
        self.code_weight, self.class_weight = code_weight, class_weight
        self.G = ConditionalGenerator(z_dim + self.code_space.dim, num_classes, image_size, g_channels, embed_dim, g_cond)
        self.D = CodeDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, num_classes, cond_d, mbstd,
                                   self.code_space.dim)

    # -- latents ----------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.z_dim + self.code_space.dim

    def sample_z(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[z, codes]`` ``(n, z_dim + code_dim)``; ``fixed`` pins blocks by name (see :meth:`CodeSpace.sample`)."""
        return self.extend_latents(torch.randn(n, self.z_dim, generator=generator), generator, fixed).to(device)

    def extend_latents(self, z: torch.Tensor, generator: torch.Generator | None = None,
                       fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[z, codes]``: code blocks drawn after the noise, ``fixed`` ones pinned."""
        return torch.cat([z, self.code_space.sample(len(z), generator, fixed)], dim=1)

    def split(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return latent[:, : self.z_dim], latent[:, self.z_dim :]

    # -- phases -------------------------------------------------------------------------------------
    def d_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = batch.y
        latent = self.train_z(len(y), y.device)
        with torch.no_grad():
            fake = self.generate(latent, y)
        real, fake = augment(batch.x), augment(fake)
        real_logits, _, real_classes = self.D.score(real, y)
        fake_logits, fake_codes, _ = self.D.score(fake, y)
        adversarial = self.d_adversarial((real,), (fake,), real_logits, fake_logits, y)
        code_loss = F.mse_loss(fake_codes.float(), self.code_space.standardize(self.split(latent)[1]))
        class_loss = F.cross_entropy(real_classes.float(), y)
        loss = adversarial + self.code_weight * code_loss + self.class_weight * class_loss
        return loss, {**self.d_stats(adversarial, real_logits, fake_logits), "d_code_mse": code_loss.detach(),
                      "d_class_ce": class_loss.detach()}

    def g_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = batch.y
        latent = self.train_z(len(y), y.device)
        fake = self.generate(latent, y)
        logits, codes, classes = self.D.score(augment(fake), y)
        adversarial = losses.g_loss(self.loss_kind, logits)
        code_loss = F.mse_loss(codes.float(), self.code_space.standardize(self.split(latent)[1]))
        class_loss = F.cross_entropy(classes.float(), y)
        loss = adversarial + self.code_weight * code_loss + self.class_weight * class_loss
        stats = {"g_loss": adversarial.detach(), "g_code_mse": code_loss.detach(), "g_class_ce": class_loss.detach()}
        return self.with_mode_seeking(loss, stats, fake, latent, y)

    # -- code control, measured ------------------------------------------------------------------
    @property
    def metric_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        names = [f"code_{b.name}_{'acc' if b.discrete else 'r2'}" for b in self.code_space.blocks]
        return ("d_code_mse", "g_code_mse", "d_class_ce", "g_class_ce", *names, *(("class_acc",) if self.class_weight > 0 else ()))

    @torch.no_grad()
    def code_recovery(self, generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n: int = RECOVERY_SAMPLES,
                      seed: int = 4321) -> dict[str, float]:
        """How well the discriminator's head recovers the codes of fresh samples: R^2 per continuous block,
        accuracy per Bernoulli block, and class accuracy, on ``n`` images from a fixed seed. The class accuracy is
        left out when ``class_weight`` is 0: the class head then never trains, and its verdict is chance."""
        g = torch.Generator().manual_seed(seed)
        device = next(self.D.parameters()).device
        latent = self.sample_z(n, g)
        y = torch.randint(self.num_classes, (n,), generator=g)
        was = self.D.training
        self.D.eval()
        try:
            preds, logits = [], []
            for i in range(0, n, 256):
                images = generate(latent[i : i + 256].to(device), y[i : i + 256].to(device))
                _, codes, classes = self.D.score(images.float(), y[i : i + 256].to(device))
                preds.append(codes.float().cpu())
                logits.append(classes.float().cpu())
        finally:
            self.D.train(was)
        figures = self.code_space.recovery(self.code_space.unstandardize(torch.cat(preds)), self.split(latent)[1])
        if self.class_weight > 0:
            figures["class_acc"] = float((torch.cat(logits).argmax(1) == y).float().mean())
        return figures

    def checkpoint_figures(self, generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           nets: dict[str, nn.Module] | None = None) -> dict[str, float]:
        return self.code_recovery(generate)
