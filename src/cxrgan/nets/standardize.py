"""Input standardization for models that compare an image with what it should look like (the dgm).

:class:`Standardizer` moves each radiograph into a common frame before the model sees it: its pose (rotation,
centring, scale) aligned with an atlas of the normal training images, and optionally its intensities mapped
rank for rank onto theirs. Where radiographs come from another machine or were positioned differently, the model
then compares like with like, and a difference it finds is in the chest rather than in how it was imaged. The
atlas and the reference intensities are buffers, saved with the network that owns the standardizer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.acquisition import estimate_pose, match_quantiles, unwarp, warp

MODES = ("none", "pose", "intensity", "pose+intensity")


class Standardizer(nn.Module):
    """``(N, 1, S, S)`` in [-1, 1] -> the same images in the standardized frame, and back.

    ``pose``: align each image with the atlas (a similarity transform, :func:`~cxrgan.data.acquisition.estimate_pose`);
    ``intensity``: then map its intensities onto the atlas images' mean sorted intensities. :meth:`fit` sets the
    atlas from normal training images; an unfitted standardizer refuses to run."""

    def __init__(self, size: int, pose: bool = True, intensity: bool = False) -> None:
        super().__init__()
        self.pose, self.intensity = pose, intensity
        self.register_buffer("atlas", torch.zeros(1, 1, size, size))
        self.register_buffer("reference", torch.zeros(size * size))

    @property
    def fitted(self) -> bool:
        return bool(self.atlas.abs().sum() > 0)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, rounds: int = 2, batch: int = 256) -> None:
        """Atlas = the mean image of ``images`` ``(N, 1, S, S)``, aligned with the previous mean ``rounds - 1`` times
        (each round sharpens it); reference intensities = the mean of their sorted intensities once aligned."""
        images = images.float().to(self.atlas.device)
        self.atlas.copy_(images.mean(0, keepdim=True))
        for _ in range(rounds - 1 if self.pose else 0):
            self.atlas.copy_(torch.cat([self._aligned(images[i : i + batch]) for i in range(0, len(images), batch)]).mean(0, keepdim=True))
        aligned = torch.cat([self._aligned(images[i : i + batch]) for i in range(0, len(images), batch)])
        self.reference.copy_(aligned.flatten(1).sort(dim=1).values.mean(0))

    def _aligned(self, x: torch.Tensor) -> torch.Tensor:
        return warp(x, estimate_pose(x, self.atlas)) if self.pose else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(standardized x, pose)``; ``pose`` ``(N, 4)`` is None without pose alignment."""
        if not self.fitted:
            raise RuntimeError("the standardizer has no atlas yet: call fit with normal training images")
        pose = estimate_pose(x, self.atlas) if self.pose else None
        out = warp(x.float(), pose).to(x.dtype) if pose is not None else x
        if self.intensity:
            out = match_quantiles(out, self.reference)
        return out.clamp(-1, 1), pose

    @torch.no_grad()
    def restore(self, maps: torch.Tensor, pose: torch.Tensor | None) -> torch.Tensor:
        """Maps ``(N, C, S, S)`` of the standardized frame in the frame of the images they came from."""
        return maps if pose is None else unwarp(maps.float(), pose).to(maps.dtype)


def build_standardizer(mode: str, size: int) -> Standardizer | None:
    """A standardizer for ``mode`` (one of :data:`MODES`), or None for ``none``."""
    if mode not in MODES:
        raise ValueError(f"standardize must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return None
    return Standardizer(size, pose="pose" in mode, intensity="intensity" in mode)
