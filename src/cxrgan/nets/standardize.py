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

from ..data.acquisition import coverage, estimate_pose, gaussian_blur, match_quantiles, unwarp, warp

STEPS = ("pose", "intensity", "fill", "smooth")
"""What a standardize mode joins with ``+`` (or ``none``): ``pose`` aligns with the atlas, ``intensity`` matches
intensities, ``fill`` paints the part of the frame an aligned image does not cover with the atlas (without it,
black; needs ``pose``), ``smooth`` brings every image to one resolution (a Gaussian blur of one pixel per 64 of the
side) before its intensities are matched."""
POSE_MARGIN = 0.125
"""The margin (a fraction of the side) that pose alignment leaves out (see :func:`~cxrgan.data.acquisition.estimate_pose`).
A standardizer saved before the margin existed loads with none, and aligns as it did."""
MODES = ("none", "pose", "intensity", "pose+intensity", "pose+intensity+fill", "pose+intensity+fill+smooth")
"""The usual modes (any combination of :data:`STEPS` is accepted, see :func:`parse_mode`)."""


def parse_mode(mode: str) -> frozenset[str]:
    """The steps of a standardize mode (empty for ``none``); a ValueError names what is wrong."""
    parts = [] if mode == "none" else str(mode).split("+")
    if any(p not in STEPS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"standardize must be none or steps joined by '+' from {', '.join(STEPS)} (such as "
                         f"{', '.join(MODES[1:])}), got {mode!r}")
    if "fill" in parts and "pose" not in parts:
        raise ValueError(f"standardize {mode!r}: fill needs pose (only an aligned image leaves part of the frame uncovered)")
    return frozenset(parts)


class Standardizer(nn.Module):
    """``(N, 1, S, S)`` in [-1, 1] -> the same images in the standardized frame, and back.

    ``pose``: align each image with the atlas (a similarity transform, :func:`~cxrgan.data.acquisition.estimate_pose`);
    ``intensity``: then map its intensities onto the atlas images' mean sorted intensities; ``smooth``: before that,
    blur it (sigma one pixel per 64 of the side) so that sharper and softer acquisitions meet at one resolution;
    ``fill``: where the aligned
    image does not cover the frame (a radiograph taken closer, or off-centre, leaves a margin once aligned), show the
    atlas there rather than black, before the intensities are matched, so a lost margin neither looks like anatomy
    nor shifts every intensity rank. :meth:`fit` sets the atlas from normal training images; an unfitted
    standardizer refuses to run."""

    def __init__(self, size: int, pose: bool = True, intensity: bool = False, fill: bool = False, smooth: bool = False) -> None:
        super().__init__()
        if fill and not pose:
            raise ValueError("fill needs pose alignment: only an aligned image leaves part of the frame uncovered")
        self.pose, self.intensity, self.fill, self.smooth = pose, intensity, fill, smooth
        self.sigma = size / 64
        self.register_buffer("pose_margin", torch.tensor(POSE_MARGIN))
        self.register_buffer("atlas", torch.zeros(1, 1, size, size))
        self.register_buffer("reference", torch.zeros(size * size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # Weights saved before the margin existed: align over the whole frame, as they were trained.
        state_dict.setdefault(prefix + "pose_margin", torch.tensor(0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _pose(self, x: torch.Tensor) -> torch.Tensor:
        return estimate_pose(x, self.atlas, margin=float(self.pose_margin))

    @property
    def fitted(self) -> bool:
        return bool(self.atlas.abs().sum() > 0)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, rounds: int = 2, batch: int = 256) -> None:
        """Atlas = the mean image of ``images`` ``(N, 1, S, S)``, aligned with the previous mean ``rounds - 1`` times
        (each round sharpens it); reference intensities = the mean of their sorted intensities once aligned (and
        smoothed, with ``smooth``)."""
        images = images.float().to(self.atlas.device)
        self.atlas.copy_(images.mean(0, keepdim=True))
        for _ in range(rounds - 1 if self.pose else 0):
            self.atlas.copy_(torch.cat([self._aligned(images[i : i + batch]) for i in range(0, len(images), batch)]).mean(0, keepdim=True))
        aligned = torch.cat([self._aligned(images[i : i + batch]) for i in range(0, len(images), batch)])
        if self.smooth:
            aligned = gaussian_blur(aligned, self.sigma)
        self.reference.copy_(aligned.flatten(1).sort(dim=1).values.mean(0))

    def _aligned(self, x: torch.Tensor) -> torch.Tensor:
        return self._warped(x, self._pose(x)) if self.pose else x

    def _warped(self, x: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        out = warp(x.float(), pose)
        if self.fill:
            cover = coverage(pose, out.shape[-1])
            out = cover * out + (1 - cover) * self.atlas.float()
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(standardized x, pose)``; ``pose`` ``(N, 4)`` is None without pose alignment."""
        if not self.fitted:
            raise RuntimeError("the standardizer has no atlas yet: call fit with normal training images")
        pose = self._pose(x) if self.pose else None
        out = self._warped(x, pose).to(x.dtype) if pose is not None else x
        if self.smooth:
            out = gaussian_blur(out.float(), self.sigma).to(x.dtype)
        if self.intensity:
            out = match_quantiles(out, self.reference)
        return out.clamp(-1, 1), pose

    @torch.no_grad()
    def restore(self, maps: torch.Tensor, pose: torch.Tensor | None) -> torch.Tensor:
        """Maps ``(N, C, S, S)`` of the standardized frame in the frame of the images they came from."""
        return maps if pose is None else unwarp(maps.float(), pose).to(maps.dtype)


def build_standardizer(mode: str, size: int) -> Standardizer | None:
    """A standardizer for ``mode`` (one of :data:`MODES`), or None for ``none``."""
    parts = parse_mode(mode)
    if not parts:
        return None
    return Standardizer(size, pose="pose" in parts, intensity="intensity" in parts, fill="fill" in parts, smooth="smooth" in parts)
