"""Differentiable augmentation (Zhao et al., DiffAugment) for GANs on small datasets.

Applied identically in distribution to real and fake images inside the D and G phases, so D never sees
un-augmented reals it could memorize while G is not pushed to produce augmented-looking images. Input and
output ``(N, 1, S, S)`` float in [-1, 1]; randomness comes from torch's global RNG, which checkpoints save
and restore, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.acquisition import KINDS, apply, random_params
from ..runtime.distributed import sharded


class DiffAugment:
    """``policy``: comma-separated ``translation``, ``cutout``, ``color``; empty = identity."""

    def __init__(self, policy: str = "", translation: float = 0.125, cutout: float = 0.5) -> None:
        self.ops = [p.strip() for p in policy.split(",") if p.strip()]
        self.translation, self.cutout = translation, cutout

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = getattr(self, f"_{op}")(x)
        return x

    @staticmethod
    def _color(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x + (sharded(n, lambda m: torch.rand(m, 1, 1, 1, device=x.device, dtype=x.dtype)) - 0.5)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (sharded(n, lambda m: torch.rand(m, 1, 1, 1, device=x.device, dtype=x.dtype)) + 0.5) + mean

    def _translation(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        sh, sw = int(h * self.translation + 0.5), int(w * self.translation + 0.5)
        ty = sharded(n, lambda m: torch.randint(-sh, sh + 1, (m, 1, 1), device=x.device))
        tx = sharded(n, lambda m: torch.randint(-sw, sw + 1, (m, 1, 1), device=x.device))
        b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
        gy = torch.clamp(gy + ty + 1, 0, h + 1)
        gx = torch.clamp(gx + tx + 1, 0, w + 1)
        padded = F.pad(x, [1, 1, 1, 1], value=-1.0)  # outside the image is black (no signal)
        return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        oy = sharded(n, lambda m: torch.randint(0, h + (1 - ch % 2), (m, 1, 1), device=x.device))
        ox = sharded(n, lambda m: torch.randint(0, w + (1 - cw % 2), (m, 1, 1), device=x.device))
        b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
        gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
        gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
        mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
        mask[b, gy, gx] = 0
        return x * mask.unsqueeze(1)


class AcquisitionAugment:
    """Random acquisition shifts of the training images themselves (:mod:`cxrgan.data.acquisition`): each kind of
    ``kinds`` (comma-separated; empty = all) at once, each up to ``scale`` times its strong setting (0 = off).
    Unlike DiffAugment this changes the data the family learns: a translator (the dgm) learns to keep each input's
    own positioning and exposure, and a generator learns to draw radiographs acquired in all those ways. Draws
    come from torch's global RNG through :func:`sharded`, so resume and several processes draw as one process does.
    """

    def __init__(self, scale: float = 0.0, kinds: str = "") -> None:
        if not (scale >= 0 and scale == scale):
            raise ValueError(f"augment.acquisition must be a number >= 0, got {scale}")
        self.scale = scale
        self.kinds = tuple(k.strip() for k in kinds.split(",") if k.strip()) or KINDS

    def __bool__(self) -> bool:
        return self.scale > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self:
            return x
        n = x.shape[0]
        params = sharded(n, lambda m: random_params(m, None, self.scale, self.kinds))
        noise = sharded(n, lambda m: torch.randn((m,) + tuple(x.shape[1:])))
        out = apply(x, params, noise=noise).to(x.dtype)
        return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else out
