"""The family interface: networks plus losses. The training loop owns everything else.

A family exposes its phases (``D`` then ``G``: which modules each phase optimizes) and a loss for each
phase; the loop runs the phases, steps the optimizers, keeps the EMA, logs and checkpoints. Adversarial
families only say how a real and a fake sample are presented to D (``real_inputs``/``fake_inputs``) and
how D scores them (``discriminate``); the loss arithmetic below is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..runtime.distributed import gather_rows, sharded
from . import losses

Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Batch:
    """One training batch: ``x`` ``(N, 1, S, S)`` float in [-1, 1], ``y`` ``(N,)`` int64 class indices, ``rows``
    ``(N,)`` int64 positions of the images in the training subset the family was bound to (where known), a host-side
    NumPy array (reading it never waits for a GPU);
    ``augmented``: ``x`` was changed after it was read (acquisition augmentation), so it is no longer the stored
    image at ``rows``."""

    x: torch.Tensor
    y: torch.Tensor
    rows: np.ndarray | None = None
    augmented: bool = False


class Family(nn.Module):
    """Base of all model families. Subclasses build ``self.G``, ``self.D`` (and optionally ``self.E``).

    Attributes: ``conditional`` (G takes a class), ``has_encoder`` (``encode`` maps images to latents),
    ``translates`` (G maps an input radiograph to an image; ``sample_z`` then draws training images),
    ``phases`` (phase name -> names of the modules it optimizes), ``ema_modules`` (averaged for sampling).
    """

    conditional: bool = False
    adversarial: bool = True  # trained against a discriminator (D's augmentation, D's losses and figures apply)
    has_encoder: bool = False
    translates: bool = False  # G maps images to images (dgm): its "latents" are input radiographs
    phases: dict[str, tuple[str, ...]] = {"D": ("D",), "G": ("G",)}
    ema_modules: tuple[str, ...] = ("G",)

    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, loss: str = "bce", gp_weight: float = 10.0, r1_gamma: float = 0.0,
                 mode_seeking: float = 0.0) -> None:
        super().__init__()
        if loss not in losses.LOSS_KINDS:
            raise ValueError(f"unknown loss {loss!r}")
        if mode_seeking and self.translates:
            raise ValueError("loss.mode_seeking needs a generator that draws from noise; this one translates images")
        self.z_dim, self.image_size, self.num_classes = z_dim, image_size, num_classes
        self.loss_kind, self.gp_weight, self.r1_gamma, self.mode_seeking = loss, gp_weight, r1_gamma, mode_seeking

    def networks(self) -> dict[str, nn.Module]:
        """The family's networks by name: ``G``, ``D`` and, where present, ``E``."""
        return {n: getattr(self, n) for n in ("G", "D", "E") if hasattr(self, n)}

    # -- data -------------------------------------------------------------------------------------
    @classmethod
    def training_classes(cls, model_cfg) -> list[str] | None:
        """The classes this family trains on when the user names none (``None``: all of them)."""
        return None

    def bind_data(self, data) -> None:
        """Called by the loop with the training subset before anything is sampled; most families ignore it."""

    def real_view(self, x: torch.Tensor) -> torch.Tensor:
        """Real images ``(N, 1, S, S)`` in [-1, 1] as the quality monitor should compare them with this family's
        outputs: as they are, except for a family whose outputs live in a frame of their own (a standardizing dgm)."""
        return x

    # -- sampling -------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Width of the generator's latent input (``z_dim``, plus code dimensions for ``semicond``)."""
        return self.z_dim

    @property
    def noise_dim(self) -> int:
        """Width of the Gaussian noise a latent starts from (``z_dim``; the whole initial image for ``ddpm``): what
        :meth:`extend_latents` completes into a latent."""
        return self.z_dim

    def sample_z(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Latents ``(n, latent_dim)``: N(0, I) of ``noise_dim`` here; families with structured latents extend them."""
        return torch.randn(n, self.noise_dim, generator=generator, device=device)

    def extend_latents(self, z: torch.Tensor, generator: torch.Generator | None = None,
                       fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Complete noise ``z`` ``(n, z_dim)`` into latents ``(n, latent_dim)`` with the family's structured part
        (code blocks, with ``fixed`` ones pinned, for ``semicond``; clusters for a self-conditioned ``dcgan``),
        drawn with ``generator``; ``z`` itself here. Lets callers draw the noise their own way (truncated)."""
        return z

    def train_z(self, n: int, device: torch.device | str) -> torch.Tensor:
        """Latents for ``n`` training rows, from the global random stream: with several processes, each draws
        for the global batch and keeps its own rows, so K processes train as one (see ``runtime.distributed``)."""
        return sharded(n, lambda m: self.sample_z(m, device=device))

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, G: nn.Module | None = None) -> torch.Tensor:
        """Images ``(N, 1, S, S)`` in [-1, 1] from latents (and classes, for conditional families)."""
        return (G or self.G)(z)

    def sampler_settings(self) -> dict[str, float | int] | None:
        """The settings of an iterative sampler (a diffusion family's steps, guidance, eta) as ``sample``'s manifest
        records them; ``None`` for a family that draws an image in one pass, as this one does."""
        return None

    def set_sampler(self, steps: int | None = None, guidance: float | None = None, eta: float | None = None) -> None:
        """Choose the iterative sampler's settings (``None`` keeps one); a one-pass family has none to choose."""
        raise ValueError("this family draws an image in one pass; it has no sampler settings")

    # -- how samples are shown to D ---------------------------------------------------------------
    def real_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return (batch.x,)

    def fake_inputs(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.generate(z, y),)

    def discriminate(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        return self.D(inputs[0], y) if self.conditional else self.D(inputs[0])

    def discriminate_features(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits for ``inputs`` and the features of D's trunk that :meth:`generator_terms` read (``None`` here:
        a family whose G terms read D's features returns them from the same forward pass)."""
        return self.discriminate(inputs, y), None

    # -- phase losses ---------------------------------------------------------------------------
    def d_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D loss on one real batch and as many fakes; stats are detached scalars."""
        y = batch.y
        with torch.no_grad():
            fake = self.fake_inputs(self.train_z(len(y), y.device), y)
        real_aug, fake_aug = self.augmented(self.real_inputs(batch), augment), self.augmented(fake, augment)
        real_logits = self.discriminate(real_aug, y)
        fake_logits = self.discriminate(fake_aug, y)
        loss = self.d_adversarial(real_aug, fake_aug, real_logits, fake_logits, y)
        return loss, self.d_stats(loss, real_logits, fake_logits)

    @staticmethod
    def augmented(inputs: tuple[torch.Tensor, ...], augment: Augment) -> tuple[torch.Tensor, ...]:
        """The image (first input) augmented; other inputs (latents) as they are."""
        return (augment(inputs[0]),) + inputs[1:]

    def d_adversarial(self, real: tuple[torch.Tensor, ...], fake: tuple[torch.Tensor, ...], real_logits: torch.Tensor,
                      fake_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured adversarial D loss plus its penalties (WGAN-GP, R1) on the inputs D scored."""
        loss = losses.d_loss(self.loss_kind, real_logits, fake_logits)
        critic = lambda *inp: self.discriminate(inp, y)  # noqa: E731
        if self.loss_kind == "wgan-gp":
            loss = loss + self.gp_weight * losses.gradient_penalty(critic, real, fake)
        if self.r1_gamma > 0:
            loss = loss + self.r1_gamma * losses.r1_penalty(critic, real)
        return loss

    @staticmethod
    def d_stats(loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "d_loss": loss.detach(),
            "d_acc_real": (real_logits.detach() > 0).float().mean(),
            "d_acc_fake": (fake_logits.detach() < 0).float().mean(),
        }

    def g_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G loss: fakes (with the real batch's classes) scored by D."""
        y = batch.y
        z = self.train_z(len(y), y.device)
        fake = self.fake_inputs(z, y)
        logits, features = self.discriminate_features(self.augmented(fake, augment), y)
        loss = losses.g_loss(self.loss_kind, logits)
        loss, stats = self.generator_terms(loss, {"g_loss": loss.detach()}, features)
        return self.with_mode_seeking(loss, stats, fake[0], z, y)

    def generator_terms(self, loss: torch.Tensor, stats: dict[str, torch.Tensor],
                        features: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's adversarial ``loss`` plus the family's own terms on D's ``features`` of G's images (from
        :meth:`discriminate_features`), with their stats; none here."""
        return loss, stats

    def with_mode_seeking(self, loss: torch.Tensor, stats: dict[str, torch.Tensor], images: torch.Tensor,
                          latents: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's ``loss`` plus the weighted mode-seeking term over ``images`` drawn from ``latents`` (within the groups
        of :meth:`mode_seeking_pairs`), logged as ``g_ms``; unchanged when the weight is 0."""
        if not self.mode_seeking:
            return loss, stats
        # Pairs are formed on the global batch (all processes' rows), so K processes train as one does.
        latents, groups = self.mode_seeking_pairs(latents, y)
        groups = None if groups is None else gather_rows(groups)
        term = losses.mode_seeking(gather_rows(images.float()), gather_rows(latents.float()), groups)
        return loss + self.mode_seeking * term, {**stats, "g_ms": term.detach()}

    def mode_seeking_pairs(self, latents: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the mode-seeking term measures latent distances on, and the groups ``(N,)`` within which it pairs
        samples: the whole latent and the classes of a conditional G, the whole latent and no groups otherwise."""
        return latents, (y if self.conditional else None)

    def phase_loss(self, phase: str, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if phase == "D":
            return self.d_phase(batch, augment)
        if phase == "G":
            return self.g_phase(batch, augment)
        raise KeyError(f"{type(self).__name__} has no phase {phase!r}")

    # -- family-specific figures ---------------------------------------------------------------------
    metric_columns: tuple[str, ...] = ()

    def progress_text(self, row: dict) -> str:
        """The training figures of a logged metrics ``row`` in one line, for the log and the progress bar."""
        return (f"G {row['g_loss']:.4f}  D {row['d_loss']:.4f}  acc real {row['d_acc_real']:.2f} "
                f"fake {row['d_acc_fake']:.2f}")

    def checkpoint_figures(self, generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           nets: dict[str, nn.Module] | None = None) -> dict[str, float]:
        """Extra figures the loop logs at every checkpoint (keys among ``metric_columns``); none by default.
        ``generate(latents, y)`` draws images with the weights used for sampling (the EMA when kept); ``nets``
        are those networks by name (the averaged ones where kept, the live D)."""
        return {}

    def selection(self, figures: dict[str, float]) -> tuple[str, bool, str]:
        """Which checkpoint figure picks the best checkpoint: ``(key, higher_is_better, description)``; FD here."""
        return "fd", False, "FD"

    def grid_rows(self, latents: torch.Tensor, images: torch.Tensor, labels: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        """How a sample grid shows ``images`` ``(R*K, 1, S, S)`` drawn for ``latents`` under row ``labels``: R rows."""
        k = len(images) // len(labels)
        return [images[i * k : (i + 1) * k] for i in range(len(labels))], labels

    def d_norm(self, spectral_norm: bool) -> str:
        """Batch norm in D only for losses and settings where it is sound."""
        return "bn" if self.loss_kind != "wgan-gp" and not spectral_norm else "none"
