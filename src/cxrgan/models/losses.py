"""Adversarial losses and regularizers, shared by every family.

``kind`` is ``bce`` (non-saturating, Goodfellow et al.), ``hinge`` (Lim & Ye; Miyato et al.) or
``wgan-gp`` (Gulrajani et al.). Logits are ``(N,)`` float; losses are scalars computed in fp32.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..runtime.distributed import sharded

LOSS_KINDS = ("bce", "hinge", "wgan-gp")


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on real and fake logits."""
    real, fake = real.float(), fake.float()
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown loss kind {kind!r}")


def g_loss(kind: str, fake: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Generator loss on fake logits (non-saturating for ``bce``); with ``weight`` ``(N,)``, the mean over the
    batch of each sample's loss times its weight."""
    fake = fake.float()
    if kind == "bce":
        per = F.softplus(-fake)
    elif kind in ("hinge", "wgan-gp"):
        per = -fake
    else:
        raise ValueError(f"unknown loss kind {kind!r}")
    return per.mean() if weight is None else (per * weight).mean()


def mode_seeking(images: torch.Tensor, latents: torch.Tensor, groups: torch.Tensor | None = None,
                 eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term (Mao et al., MSGAN): ``1 / (mean over pairs of d(x_i, x_j) / d(z_i, z_j) + eps)``, mean
    absolute differences, to be minimized by G. It grows when G maps distant latents to similar images.

    Pairs are neighbours in the batch; with ``groups`` ``(N,)`` (the classes of a conditional G) only samples of
    one group are paired, so the term asks for variety within a class, not between classes. Deterministic: it
    draws no random numbers. A batch with no pair gives 0."""
    order = torch.arange(len(images), device=images.device) if groups is None else torch.argsort(groups, stable=True)
    a, b = order[0:-1:2], order[1::2]
    if groups is not None:
        same = groups[a] == groups[b]
        a, b = a[same], b[same]
    if not len(a):
        return images.new_zeros((), dtype=torch.float32)
    dx = (images[a].float() - images[b].float()).abs().flatten(1).mean(1)
    dz = (latents[a].float() - latents[b].float()).abs().flatten(1).mean(1)
    return 1.0 / ((dx / dz.clamp_min(eps)).mean() + eps)


def _no_autocast():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device_type=device, enabled=False)


def gradient_penalty(critic: Callable[..., torch.Tensor], real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """WGAN-GP: ``E[(||grad critic(x_hat)|| - 1)^2]`` on random interpolates of every input tensor."""
    with _no_autocast():
        n = real[0].shape[0]
        inputs = []
        for r, f in zip(real, fake):
            alpha = sharded(n, lambda m, r=r: torch.rand((m,) + (1,) * (r.dim() - 1), device=r.device, dtype=torch.float32))
            inputs.append((alpha * r.float() + (1 - alpha) * f.detach().float()).requires_grad_(True))
        out = critic(*inputs)
        grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
        norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads) + 1e-12)
        return ((norm - 1.0) ** 2).mean()


def r1_penalty(critic: Callable[..., torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """R1 (Mescheder et al.): ``E[||grad critic(x_real)||^2] / 2``."""
    with _no_autocast():
        inputs = [r.detach().float().requires_grad_(True) for r in real]
        out = critic(*inputs)
        grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
        return 0.5 * sum(g.flatten(1).pow(2).sum(1) for g in grads).mean()
