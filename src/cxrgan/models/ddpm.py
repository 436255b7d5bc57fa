"""``ddpm``: a class-conditional denoising diffusion model (Ho et al., 2020) beside the GANs, trained and measured
by the same loop and suite.

The network and the noise schedules are MONAI's (the medical-imaging field's own library):
``monai.networks.nets.DiffusionModelUNet`` and ``monai.networks.schedulers`` (``DDPMScheduler`` for the forward
process, ``DDIMScheduler`` for sampling). MONAI needs only torch and NumPy (einops for attention), imports in about
1.7 s, and is imported only when a ``ddpm`` run is built.

- **Training** is one phase, ``G`` (the denoiser): an image, a timestep ``t`` drawn uniformly, Gaussian noise;
  the network sees the noised image and predicts the noise (``prediction: epsilon``) or the velocity
  (``v_prediction``, Salimans & Ho 2022) under an MSE loss. The class is dropped to a null class with probability
  ``label_dropout``, so one network learns the conditional and the unconditional model (classifier-free guidance,
  Ho & Salimans 2022). ``min_snr_gamma`` > 0 weights each image's loss by Min-SNR-gamma (Hang et al., 2023):
  ``min(SNR(t), gamma) / SNR(t)`` for an epsilon target, ``/ (SNR(t) + 1)`` for a velocity, so the nearly clean
  timesteps, whose loss is easy, no longer pull the network's capacity away from the noisier ones. Every random
  draw comes from the global stream through :func:`sharded`, so torchrun trains as one process does, and exact
  resume holds.
- **Sampling** is DDIM (Song et al., 2021) with ``sample_steps`` steps and ``sample_eta`` (0: no noise added; 1: as
  much as the ancestral DDPM sampler adds, drawn per image from a generator seeded by its initial noise), so an image
  is a function of its initial noise alone. That noise is this family's latent (``latent_dim`` = S x S): seeds, the
  fixed grids, the quality monitor's latents and ``cxrgan sample --seed`` reproduce exactly as for a GAN.
  ``guidance`` w mixes the two branches, ``uncond + w (cond - uncond)``; w = 1 is the plain conditional model and
  costs one network pass per step instead of two.
- The UNet's depth follows the image size (its lowest resolution is 8 px: 3 levels at 32 px, 4 at 64, 5 at 128,
  6 at 256), with widths ``g_channels`` x (1, 2, 2, 4, 4, 4) and self-attention at resolutions up to
  ``attention_px``.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from ..runtime.distributed import sharded
from .base import Augment, Batch, Family
from .registry import register

PREDICTIONS = ("epsilon", "v_prediction")
SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")
_WIDTH_MULTIPLIERS = (1, 2, 2, 4, 4, 4)


def unet_layout(size: int, base: int, attention_px: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Channels per level and where attention sits for a ``size`` px UNet of base width ``base``: levels down to 8 px
    (at least two), widths ``base`` x (1, 2, 2, 4, 4, 4), attention at levels whose resolution is at most
    ``attention_px``."""
    if size < 16 or size & (size - 1):
        raise ValueError(f"ddpm needs a power-of-two image size of at least 16 px, got {size}")
    levels = max(2, int(math.log2(size // 8)) + 1)
    channels = tuple(base * m for m in _WIDTH_MULTIPLIERS[:levels])
    return channels, tuple((size >> i) <= attention_px for i in range(levels))


class _ImageNoise:
    """Fresh Gaussian noise for every image of a batch from a generator of its own, seeded by the image's initial noise:
    a stochastic sampler (eta > 0) then still draws each image as a function of its latent alone, whatever batch it
    is generated in."""

    def __init__(self, z: torch.Tensor) -> None:
        rows = z.detach().float().cpu().numpy()
        self.generators = [torch.Generator().manual_seed(zlib.crc32(r.tobytes())) for r in rows]

    def draw(self, like: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.randn(like.shape[1:], generator=g) for g in self.generators]).to(like.device, like.dtype)


class Denoiser(nn.Module):
    """MONAI's diffusion UNet for one-channel images with a class embedding of ``num_classes`` + 1 entries (the last
    is the null class of classifier-free guidance): ``(x_t, t, y) -> prediction`` of the same shape as ``x_t``."""

    def __init__(self, size: int, base: int, num_classes: int, res_blocks: int, attention_px: int) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        channels, attention = unet_layout(size, base, attention_px)
        self.net = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_res_blocks=res_blocks,
                                      channels=channels, attention_levels=attention, norm_num_groups=max(1, min(32, base // 2)),
                                      num_head_channels=base, num_class_embeds=num_classes + 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, class_labels=y)


@register("ddpm")
class DDPM(Family):
    """Class-conditional DDPM with classifier-free guidance and a DDIM sampler (see the module's docstring)."""

    conditional = True
    adversarial = False
    phases = {"G": ("G",)}
    ema_modules = ("G",)
    metric_columns = ("denoise_mse",)

    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, res_blocks: int = 1,
                 attention_px: int = 8, timesteps: int = 1000, schedule: str = "cosine", prediction: str = "epsilon",
                 sample_steps: int = 25, guidance: float = 1.0, sample_eta: float = 1.0, label_dropout: float = 0.1,
                 min_snr_gamma: float = 0.0, **kw) -> None:
        if kw.get("mode_seeking") or kw.get("r1_gamma"):
            raise ValueError("loss.mode_seeking and loss.r1_gamma are terms of a GAN's losses; a ddpm has no discriminator")
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        if prediction not in PREDICTIONS:
            raise ValueError(f"model.prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if timesteps < 2:
            raise ValueError(f"model.timesteps must be at least 2, got {timesteps}")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"model.label_dropout must be in [0, 1), got {label_dropout}")
        if res_blocks < 1:
            raise ValueError(f"model.res_blocks must be at least 1, got {res_blocks}")
        if not (min_snr_gamma >= 0 and math.isfinite(min_snr_gamma)):
            raise ValueError(f"model.min_snr_gamma must be 0 (off) or a positive number, got {min_snr_gamma}")
        self.min_snr_gamma = float(min_snr_gamma)
        self.timesteps, self.schedule, self.prediction, self.label_dropout = timesteps, schedule, prediction, label_dropout
        self.sample_steps, self.guidance, self.eta = 1, 1.0, 0.0
        self.set_sampler(sample_steps, guidance, sample_eta)
        self.G = Denoiser(image_size, g_channels, num_classes, res_blocks, attention_px)
        from monai.networks.schedulers import DDPMScheduler

        self.noise = DDPMScheduler(num_train_timesteps=timesteps, schedule=schedule, prediction_type=prediction)

    # -- sampling -----------------------------------------------------------------------------------------------
    def set_sampler(self, steps: int | None = None, guidance: float | None = None, eta: float | None = None) -> None:
        """Choose the DDIM sampler's number of steps, the guidance weight and eta (0: deterministic; 1: as much fresh
        noise per step as the ancestral DDPM sampler); ``None`` keeps the current value."""
        if steps is not None:
            if not 1 <= steps <= self.timesteps:
                raise ValueError(f"sample steps must be between 1 and the {self.timesteps} training timesteps, got {steps}")
            self.sample_steps = int(steps)
        if guidance is not None:
            if guidance < 0:
                raise ValueError(f"guidance must be at least 0, got {guidance}")
            self.guidance = float(guidance)
        if eta is not None:
            if not 0 <= eta <= 1:
                raise ValueError(f"eta must be between 0 and 1, got {eta}")
            self.eta = float(eta)

    def sampler_settings(self) -> dict[str, float | int]:
        return {"sample_steps": self.sample_steps, "guidance": self.guidance, "eta": self.eta}

    @property
    def latent_dim(self) -> int:
        return self.image_size * self.image_size

    @property
    def noise_dim(self) -> int:
        """The initial noise of an image, flattened (``S * S``): the whole latent."""
        return self.latent_dim

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, G: nn.Module | None = None) -> torch.Tensor:
        """DDIM from the initial noise ``z`` ``(N, S * S)`` for classes ``y``: images ``(N, 1, S, S)`` in [-1, 1]."""
        if y is None:
            raise ValueError("a ddpm is class-conditional: pass the classes y")
        from monai.networks.schedulers import DDIMScheduler

        net = G or self.G
        s = self.image_size
        x = z.float().reshape(len(z), 1, s, s)
        if any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in net.parameters()):
            x = x.contiguous(memory_format=torch.channels_last)  # with channels-last weights: 1.2x on a CPU
        schedule = DDIMScheduler(num_train_timesteps=self.timesteps, schedule=self.schedule, prediction_type=self.prediction)
        alpha_bar = schedule.alphas_cumprod.to(x.device, torch.float32)
        schedule.set_timesteps(self.sample_steps)  # step() reads the stride from it
        stride = self.timesteps // self.sample_steps
        # The DDIM paper's timesteps t = k * stride (MONAI's set_timesteps starts at T - 1, where the cosine schedule
        # leaves no signal and an epsilon prediction cannot give the image).
        steps = torch.arange(self.sample_steps - 1, -1, -1) * stride
        noises = _ImageNoise(z) if self.eta > 0 else None
        guided = self.guidance != 1.0
        null = torch.full_like(y, self.num_classes)
        for t in steps.tolist():
            tt = torch.full((len(x),), t, dtype=torch.long, device=x.device)
            if guided:
                cond, uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).float().chunk(2)
                out = uncond + self.guidance * (cond - uncond)
            else:
                out = net(x, tt, y).float()
            x0 = schedule.step(out, t, x)[1]  # MONAI's estimate of the clean image, clipped to [-1, 1]
            a, a_prev = alpha_bar[t], alpha_bar[t - stride] if t >= stride else torch.tensor(1.0)
            # Song et al.'s update (eq. 12) from the clipped estimate, with the noise estimate made consistent with it
            # (as improved-diffusion does): clipping x0 alone, and keeping the network's noise, leaves a pattern of
            # +-1 pixels that a deterministic sampler carries to the end.
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            sigma = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if noises is not None and t >= stride:
                x = x + sigma * noises.draw(x)
        return x.clamp(-1, 1)

    # -- training -----------------------------------------------------------------------------------------------
    def phase_loss(self, phase: str, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The denoising loss of one batch (``augment``, D's view of images, does not apply: there is no D)."""
        if phase != "G":
            raise KeyError(f"ddpm has no phase {phase!r}")
        x0 = batch.x.float()
        n, dev = len(x0), x0.device
        noise = sharded(n, lambda m: torch.randn(m, *x0.shape[1:], device=dev))
        t = sharded(n, lambda m: torch.randint(0, self.timesteps, (m,), device=dev))
        drop = sharded(n, lambda m: torch.rand(m, device=dev)) < self.label_dropout
        y = torch.where(drop, torch.full_like(batch.y, self.num_classes), batch.y)
        xt = self.noise.add_noise(original_samples=x0, noise=noise, timesteps=t)
        target = noise if self.prediction == "epsilon" else self.noise.get_velocity(x0, noise, t)
        per_image = (self.G(xt, t, y).float() - target).pow(2).flatten(1).mean(1)
        mse = per_image.mean()
        loss = (per_image * self.loss_weights(t)).mean() if self.min_snr_gamma > 0 else mse
        return loss, {"denoise_mse": mse.detach()}

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weight of each timestep in ``t`` for this family's prediction target (1 where SNR(t) <= gamma
        for an epsilon target)."""
        alpha_bar = self.noise.alphas_cumprod.to(t.device, torch.float32)[t]
        snr = alpha_bar / (1 - alpha_bar).clamp(min=1e-12)
        clipped = snr.clamp(max=self.min_snr_gamma)
        return clipped / snr.clamp(min=1e-12) if self.prediction == "epsilon" else clipped / (snr + 1)

    def progress_text(self, row: dict) -> str:
        return f"denoising MSE {row['denoise_mse']:.4f}"
