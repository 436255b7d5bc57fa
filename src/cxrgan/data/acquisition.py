"""Acquisition shifts: the same chest as another machine, technician or protocol would have imaged it.

Radiographs from another hospital differ from the training images in ways that carry no information about
disease: exposure (the film's gamma), contrast (the window), sharpness (focal spot, detector, processing
kernel), noise (dose), and positioning (rotation, centring, collimation and so the field of view). This module
applies those changes to a batch, each with a parameter per image, so that they serve two purposes:

- the shift protocol (:mod:`cxrgan.evaluate.shift`): real test images moved by one kind of shift at a named
  strength, to measure how much a figure depends on how the images were acquired;
- training augmentation: every kind at once with random parameters per image (:func:`random_params`), for
  models that must not read acquisition as disease.

Images are ``(N, 1, S, S)`` float in [-1, 1] (bright = dense), as everywhere in the package; distances are
given at 64 px and scale with the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.nn import functional as F

# Each kind's parameter at the two named strengths. Directed kinds move each image one way or the other (chosen
# at random per image); the figures below are the size of the move.
STRENGTHS: dict[str, dict[str, float]] = {
    "exposure": {"mild": 1.2, "strong": 1.45},     # gamma of intensities in [0, 1]: x**g (darker) or x**(1/g)
    "contrast": {"mild": 1.12, "strong": 1.25},    # factor on the deviation from the image mean, or its inverse
    "sharpness": {"mild": 0.3, "strong": 0.6},     # unsharp-mask amount (sigma 1 px at 64 px): +a sharpens, -a blurs
    "noise": {"mild": 0.01, "strong": 0.015},       # standard deviation of added Gaussian noise, intensities in [0, 1]
    "rotation": {"mild": 5.0, "strong": 10.0},      # degrees, either way
    "translation": {"mild": 0.04, "strong": 0.08},  # fraction of the image side, in a random direction
    "zoom": {"mild": 1.07, "strong": 1.15},        # field of view narrower (zoom in) or wider by this factor
}
KINDS = tuple(STRENGTHS)
UNDIRECTED = ("noise",)
"""Kinds applied the same way to every image (the rest take a random direction per image)."""
STRENGTH_NAMES = ("mild", "strong")


@dataclass
class AcquisitionParams:
    """Per-image parameters ``(N,)`` of every kind; the identity is ``gamma = contrast = zoom = 1`` and the
    rest 0. ``zoom`` > 1 narrows the field of view (the chest looks larger)."""

    gamma: torch.Tensor
    contrast: torch.Tensor
    sharpness: torch.Tensor
    noise: torch.Tensor
    angle: torch.Tensor  # degrees, counter-clockwise
    dx: torch.Tensor  # fraction of the side, positive = content moves right
    dy: torch.Tensor
    zoom: torch.Tensor

    @classmethod
    def identity(cls, n: int) -> "AcquisitionParams":
        one, zero = torch.ones(n), torch.zeros(n)
        return cls(gamma=one, contrast=one.clone(), sharpness=zero, noise=zero.clone(), angle=zero.clone(), dx=zero.clone(),
                   dy=zero.clone(), zoom=one.clone())

    def to(self, device: torch.device | str) -> "AcquisitionParams":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, rows: slice | torch.Tensor) -> "AcquisitionParams":
        """The parameters of some images (a slice or index tensor of the ``N``)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``(N, C, H, W)`` with standard deviation ``sigma`` pixels (edges repeated)."""
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _resample_black(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """``x`` in [-1, 1] resampled at ``grid``; what falls outside the image is black (-1), as the unexposed border of a
    radiograph is, rather than repeated edge pixels, which would paint streaks no radiograph has."""
    return F.grid_sample(x + 1, grid, mode=mode, padding_mode="zeros", align_corners=False) - 1


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def apply(x: torch.Tensor, p: AcquisitionParams, generator: torch.Generator | None = None,
          noise: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` ``(N, 1, S, S)`` in [-1, 1] as acquired with parameters ``p`` (each ``(N,)``): positioning first
    (rotation, translation and zoom in one resampling; uncovered area black), then exposure, contrast, sharpness and
    noise (standard normal ``noise`` shaped like ``x`` when given, else drawn from ``generator``). Returns a new
    float32 tensor in [-1, 1]."""
    n, _, s, _ = x.shape
    p = p.to(x.device)
    x = x.float()
    if bool((p.angle != 0).any() or (p.dx != 0).any() or (p.dy != 0).any() or (p.zoom != 1).any()):
        a = p.angle * (math.pi / 180)
        theta = torch.zeros(n, 2, 3, device=x.device)
        # affine_grid maps output coordinates to input ones: the inverse of the move applied to the content.
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / p.zoom, torch.sin(a) / p.zoom
        theta[:, 1, 0], theta[:, 1, 1] = -torch.sin(a) / p.zoom, torch.cos(a) / p.zoom
        theta[:, 0, 2], theta[:, 1, 2] = -2 * p.dx, -2 * p.dy
        grid = F.affine_grid(theta, [n, 1, s, s], align_corners=False)
        x = _resample_black(x, grid, "bicubic")
    u = ((x + 1) / 2).clamp(0, 1)
    if bool((p.gamma != 1).any()):
        u = u.clamp_min(1e-6) ** _col(p.gamma)
    if bool((p.contrast != 1).any()):
        mean = u.mean(dim=(1, 2, 3), keepdim=True)
        u = ((u - mean) * _col(p.contrast) + mean).clamp(0, 1)
    if bool((p.sharpness != 0).any()):
        a = _col(p.sharpness)
        # -1 <= a < 0 blends towards the blurred image; a > 0 is an unsharp mask.
        u = (u + a * (u - gaussian_blur(u, max(0.5, s / 64)))).clamp(0, 1)
    if bool((p.noise != 0).any()):
        n01 = noise if noise is not None else torch.randn(u.shape, generator=generator)
        u = (u + _col(p.noise) * n01.to(u.device, u.dtype)).clamp(0, 1)
    return u * 2 - 1


def strength_value(kind: str, strength: str | float) -> float:
    """The parameter of ``kind`` at a named strength (``mild``, ``strong``) or a number given as is."""
    if kind not in STRENGTHS:
        raise ValueError(f"unknown acquisition shift {kind!r}; known: {', '.join(KINDS)}")
    if isinstance(strength, str):
        if strength not in STRENGTHS[kind]:
            try:
                return float(strength)
            except ValueError:
                raise ValueError(f"strength {strength!r} of {kind}: use {' or '.join(STRENGTH_NAMES)}, or a number") from None
        return STRENGTHS[kind][strength]
    return float(strength)


def one_kind(n: int, kind: str, amount: float, generator: torch.Generator) -> AcquisitionParams:
    """Parameters that move ``n`` images by ``kind`` at ``amount`` (see :data:`STRENGTHS`), each directed kind
    one way or the other at random (from ``generator``)."""
    p = AcquisitionParams.identity(n)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    if kind == "exposure":
        p.gamma = torch.full((n,), amount) ** sign
    elif kind == "contrast":
        p.contrast = torch.full((n,), amount) ** sign
    elif kind == "sharpness":
        p.sharpness = torch.where(sign < 0, -min(amount, 1.0), amount)  # a blur blends at most to the blurred image
    elif kind == "noise":
        p.noise = torch.full((n,), amount)
    elif kind == "rotation":
        p.angle = sign * amount
    elif kind == "translation":
        phi = torch.rand(n, generator=generator) * 2 * math.pi
        p.dx, p.dy = amount * torch.cos(phi), amount * torch.sin(phi)
    elif kind == "zoom":
        p.zoom = torch.full((n,), amount) ** sign
    else:
        raise ValueError(f"unknown acquisition shift {kind!r}; known: {', '.join(KINDS)}")
    return p


def random_params(n: int, generator: torch.Generator | None, scale: float = 1.0, kinds: tuple[str, ...] = KINDS) -> AcquisitionParams:
    """Every kind in ``kinds`` at once, each parameter drawn uniformly between no change and ``scale`` times its
    strong setting, either way (``generator`` None: torch's global one): the augmentation that teaches a model
    that acquisition is not disease."""
    p = AcquisitionParams.identity(n)
    u = lambda: torch.rand(n, generator=generator) * 2 - 1  # noqa: E731  in [-1, 1]
    strong = {k: STRENGTHS[k]["strong"] for k in kinds}
    if "exposure" in strong:
        p.gamma = strong["exposure"] ** (scale * u())
    if "contrast" in strong:
        p.contrast = strong["contrast"] ** (scale * u())
    if "sharpness" in strong:
        p.sharpness = (scale * strong["sharpness"] * u()).clamp(-1, None)
    if "noise" in strong:
        p.noise = scale * strong["noise"] * (u() + 1) / 2
    if "rotation" in strong:
        p.angle = scale * strong["rotation"] * u()
    if "translation" in strong:
        p.dx, p.dy = scale * strong["translation"] * u(), scale * strong["translation"] * u()
    if "zoom" in strong:
        p.zoom = strong["zoom"] ** (scale * u())
    return p


def shift_images(images_u8: np.ndarray, kind: str, strength: str | float, seed: int = 0, batch: int = 512) -> np.ndarray:
    """uint8 images ``(N, S, S)`` moved by ``kind`` at ``strength`` (named or a number); a new array. The same
    seed gives the same directions and noise."""
    amount = strength_value(kind, strength)
    g = torch.Generator().manual_seed(seed)
    images_u8 = np.asarray(images_u8)
    params = one_kind(len(images_u8), kind, amount, g)
    out = np.empty_like(images_u8, dtype=np.uint8)
    for i in range(0, len(images_u8), batch):
        x = torch.from_numpy(np.asarray(images_u8[i : i + batch], np.float32)).unsqueeze(1) / 127.5 - 1
        y = apply(x, params[i : i + batch], g)
        out[i : i + batch] = np.clip(np.rint((y[:, 0].numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    return out


# -- acquisition properties of an image ---------------------------------------------------------------------
FEATURE_NAMES = ("mean", "std", "p05", "p50", "p95", "sharpness", "noise", "body_fraction", "body_top", "body_bottom",
                 "body_left", "body_right", "border")


def acquisition_features(images_u8: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Per image ``(N, F)`` float64 (names in :data:`FEATURE_NAMES`): intensity statistics, sharpness (mean
    gradient magnitude over the standard deviation), a noise estimate (median absolute Laplacian), the field of
    view (share of pixels brighter than the image's Otsu-like midpoint, and the rows and columns where that
    body starts and ends, as fractions of the side) and the mean of the outer tenth (collimation)."""
    out = []
    for i in range(0, len(images_u8), batch):
        x = np.asarray(images_u8[i : i + batch], np.float32) / 255.0
        n, s, _ = x.shape
        flat = x.reshape(n, -1)
        q = np.quantile(flat, [0.05, 0.5, 0.95], axis=1)
        std = flat.std(1) + 1e-6
        gy, gx = np.abs(np.diff(x, axis=1)).mean((1, 2)), np.abs(np.diff(x, axis=2)).mean((1, 2))
        lap = np.abs(4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
        body = x > ((q[0] + q[2]) / 2)[:, None, None]
        rows, cols = body.mean(2), body.mean(1)

        def edge(profile: np.ndarray, last: bool) -> np.ndarray:
            on = profile > 0.25
            idx = np.where(on.any(1), (s - 1 - np.argmax(on[:, ::-1], 1)) if last else np.argmax(on, 1), s // 2)
            return idx / (s - 1)

        b = max(1, s // 10)
        frame = np.ones((s, s), bool)
        frame[b:-b, b:-b] = False
        out.append(np.stack([flat.mean(1), std, q[0], q[1], q[2], (gx + gy) / std, np.median(lap.reshape(n, -1), 1),
                             body.mean((1, 2)), edge(rows, False), edge(rows, True), edge(cols, False), edge(cols, True),
                             x[:, frame].mean(1)], 1))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(FEATURE_NAMES)))


# -- undoing acquisition: standardized pose and intensity -----------------------------------------------------
POSE_BOUNDS = (0.35, 0.3, 0.3)  # |angle| in radians (20 degrees), |shift| in half-sides (15% of the side), |log scale|


def similarity_theta(pose: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` sampling matrices (output to input coordinates, as ``affine_grid`` takes them) of similarity
    transforms ``pose`` ``(N, 4)``: angle in radians, x and y shift in half-sides, log scale."""
    a, tx, ty, ls = pose.unbind(1)
    s = torch.exp(ls)
    return torch.stack([torch.stack([torch.cos(a) * s, -torch.sin(a) * s, tx], 1),
                        torch.stack([torch.sin(a) * s, torch.cos(a) * s, ty], 1)], 1)


def warp(x: torch.Tensor, pose: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
    """Images ``x`` ``(N, C, S, S)`` in [-1, 1] resampled by the similarity transforms ``pose`` ``(N, 4)`` (uncovered
    area black)."""
    grid = F.affine_grid(similarity_theta(pose).to(x.dtype), list(x.shape), align_corners=False)
    return _resample_black(x, grid, mode)


def coverage(pose: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 1, size, size)`` in [0, 1]: how much of each pixel of :func:`warp`'s output ``pose`` ``(N, 4)`` takes from
    inside the image (1) rather than from beyond its edge (0), partly at the edge."""
    ones = torch.ones(len(pose), 1, size, size, device=pose.device)
    grid = F.affine_grid(similarity_theta(pose.float()), list(ones.shape), align_corners=False)
    return F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def unwarp(maps: torch.Tensor, pose: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """The inverse of :func:`warp` for maps ``(N, C, S, S)`` of differences (0 = none): from the standardized frame
    back into the frame of the image they came from; where that frame saw nothing of the image, 0."""
    theta = similarity_theta(pose)
    a_inv = torch.linalg.inv(theta[:, :, :2])
    inv = torch.cat([a_inv, -(a_inv @ theta[:, :, 2:])], 2)
    grid = F.affine_grid(inv.to(maps.dtype), list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean((2, 3), keepdim=True)
    b = b - b.mean((2, 3), keepdim=True)
    return (a * b).sum((2, 3, 1)) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1) + 1e-6)


def estimate_pose(x: torch.Tensor, template: torch.Tensor, steps: int = 60, lr: float = 0.03, margin: float = 0.0) -> torch.Tensor:
    """The similarity transform ``(N, 4)`` (see :func:`similarity_theta`) that best aligns each image of ``x``
    ``(N, 1, S, S)`` with ``template`` ``(1, 1, S, S)``: normalized cross-correlation (blind to brightness and
    contrast) maximized by Adam at half resolution, within :data:`POSE_BOUNDS`, over the frame less ``margin`` (a
    fraction of the side) on every side. With a margin, what an aligned image brings to the edge of the frame (an
    unexposed border, the end of a field of view) does not pull the alignment: on the test split at 64 px a margin of
    1/8 leaves a third of the error that strong translation, zoom and rotation leave with none. Deterministic; fp32
    whatever the autocast around it; no gradient flows back to ``x``."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin is a fraction of the side from 0 to below 0.5, got {margin}")
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        small = F.avg_pool2d(x.detach().float(), 2) if x.shape[-1] >= 32 else x.detach().float()
        tmpl = (F.avg_pool2d(template.float(), 2) if x.shape[-1] >= 32 else template.float()).expand_as(small)
        k = int(round(small.shape[-1] * margin))
        inner = (..., slice(k, small.shape[-2] - k), slice(k, small.shape[-1] - k))
        tmpl = tmpl[inner]
        pose = torch.zeros(len(x), 4, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([pose], lr=lr)
        bound = torch.tensor([POSE_BOUNDS[0], POSE_BOUNDS[1], POSE_BOUNDS[1], POSE_BOUNDS[2]], device=x.device)
        for _ in range(steps):
            loss = -_ncc(warp(small, pose, mode="bilinear")[inner], tmpl).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                pose.copy_(torch.maximum(torch.minimum(pose, bound), -bound))
    return pose.detach()


def match_quantiles(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` ``(N, 1, S, S)`` with its intensities replaced, rank for rank, by the sorted values
    ``reference`` ``(S*S,)``: any monotone change of exposure or contrast is undone, and what is denser than the
    rest of the same image stays so."""
    flat = x.detach().float().flatten(1)
    ranks = torch.argsort(torch.argsort(flat, dim=1, stable=True), dim=1, stable=True)
    return reference.float()[ranks].view_as(x).to(x.dtype)
