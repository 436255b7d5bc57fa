"""Intensity and geometry preprocessing: every decoded radiograph becomes ``(S, S)`` uint8.

Input to :func:`preprocess` is ``(H, W)`` float32 in [0, 1] with bright = dense (film convention);
decoders (``decode.py``) are responsible for that intensity contract, including DICOM MONOCHROME1
inversion. Here the image is cropped or padded to a square, resized with an antialiasing filter, optionally
histogram-equalized and quantized to uint8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import CxrganError

SUPPORTED_SIZES: tuple[int, ...] = (32, 64, 128, 256)
FITS = ("crop", "pad")
INTENSITIES = ("auto", "minmax", "percentile")


@dataclass(frozen=True)
class Preprocess:
    """How sources are turned into stored images.

    size: output side in pixels, one of ``SUPPORTED_SIZES``.
    fit: ``crop`` (centre square crop) or ``pad`` (centre on a black square, keeps the whole field).
    equalize: global histogram equalization after resizing.
    intensity: ``auto`` (8-bit data by its range, deeper data per-image min-max), ``minmax`` (always
        per-image min-max) or ``percentile`` (per-image 0.5-99.5 percentile window).
    """

    size: int = 64
    fit: str = "crop"
    equalize: bool = False
    intensity: str = "auto"

    def __post_init__(self) -> None:
        if self.size not in SUPPORTED_SIZES:
            raise CxrganError(
                f"--size {self.size} is not supported; use one of {', '.join(map(str, SUPPORTED_SIZES))}"
            )
        if self.fit not in FITS:
            raise CxrganError(f"--fit {self.fit!r} is not known; use crop or pad")
        if self.intensity not in INTENSITIES:
            raise CxrganError(f"--intensity {self.intensity!r} is not known; use one of {', '.join(INTENSITIES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_intensity(arr: np.ndarray, mode: str, bits: int) -> np.ndarray:
    """Map raw pixel values to float32 [0, 1].

    ``bits`` is the stored bit depth (8 for ordinary images). ``auto`` divides 8-bit data by 255 and
    min-max scales deeper data (a 12-bit image in a 16-bit container would otherwise look black).
    """
    a = np.asarray(arr, dtype=np.float32)
    if mode == "auto" and bits <= 8:
        return scale_window(a, 0.0, 255.0)
    if mode == "percentile":
        lo, hi = np.percentile(a, [0.5, 99.5])
    else:
        lo, hi = float(a.min()), float(a.max())
    return scale_window(a, lo, hi)


def scale_window(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map the window [lo, hi] linearly to [0, 1] (clipping outside); all zeros for an empty window."""
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((np.asarray(a, dtype=np.float32) - float(lo)) / float(hi - lo), 0.0, 1.0)


def square_offsets(h: int, w: int, fit: str) -> tuple[int, int, int]:
    """``(side, dy, dx)`` of the centred square: for ``crop`` the square's corner in the image, for
    ``pad`` the image's corner in the square."""
    side = min(h, w) if fit == "crop" else max(h, w)
    return side, abs(h - side) // 2, abs(w - side) // 2


def square(a: np.ndarray, fit: str) -> np.ndarray:
    """Centre-crop or zero-pad ``(H, W)`` to a square."""
    h, w = a.shape
    if h == w:
        return a
    s, y, x = square_offsets(h, w, fit)
    if fit == "crop":
        return a[y : y + s, x : x + s]
    out = np.zeros((s, s), dtype=a.dtype)
    out[y : y + h, x : x + w] = a
    return out


def resize(a: np.ndarray, size: int, resample: int = Image.LANCZOS) -> np.ndarray:
    """Antialiased resize of a float32 ``(S0, S0)`` array to ``(size, size)``.

    Large reductions first shrink by an integer box factor (``reducing_gap``), which is both faster and
    as alias-free as a full Lanczos pass.
    """
    if a.shape == (size, size):
        return a.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(im.resize((size, size), resample, reducing_gap=2.0), dtype=np.float32)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images ``(N, S0, S0)`` resized (Lanczos, antialiased) to ``(N, size, size)``; returned as they are when
    already that size."""
    if images.shape[-1] == size:
        return np.asarray(images)
    if len(images) == 0:
        return np.zeros((0, size, size), np.uint8)
    return np.stack([np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), Image.LANCZOS)) for im in images])


def equalize(u8: np.ndarray) -> np.ndarray:
    """Global histogram equalization of a uint8 image."""
    hist = np.bincount(u8.ravel(), minlength=256)
    cdf = hist.cumsum()
    nz = cdf[cdf > 0]
    if nz.size == 0 or cdf[-1] == nz[0]:
        return u8
    lut = np.clip(np.rint((cdf - nz[0]) / (cdf[-1] - nz[0]) * 255.0), 0, 255).astype(np.uint8)
    return lut[u8]


def preprocess(img01: np.ndarray, prep: Preprocess, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W)`` float32 in [0, 1] -> ``(S, S)`` uint8; an optional mask follows the same geometry."""
    if img01.ndim != 2 or min(img01.shape) < 2:
        raise ValueError(f"image has shape {img01.shape}; expected a 2-D picture")
    sq = resize(square(img01, prep.fit), prep.size)
    u8 = np.clip(np.rint(sq * 255.0), 0, 255).astype(np.uint8)
    if prep.equalize:
        u8 = equalize(u8)
    out_mask = None
    if mask is not None:
        m = resize(square(mask.astype(np.float32), prep.fit), prep.size, Image.BOX)
        out_mask = (m >= 0.5).astype(np.uint8)
    return u8, out_mask
