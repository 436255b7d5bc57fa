"""Image utilities: grids, PNG output and value-range conversion (no torchvision)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_path


def to_uint8(x: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Map a float array in ``value_range`` to uint8 [0, 255], clipping outside values."""
    lo, hi = value_range
    y = (np.asarray(x, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, fill: int = 0) -> np.ndarray:
    """Tile images ``(N, H, W)`` uint8 into one ``(rows*H', nrow*W')`` uint8 array, row-major."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"make_grid expects (N, H, W), got shape {images.shape}")
    n, h, w = images.shape
    ncol = max(1, nrow)
    nrows = max(1, -(-n // ncol))
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad), fill, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size bitmap font only
        return ImageFont.load_default()


def labelled_rows(
    rows: Sequence[np.ndarray], labels: Sequence[str], scale: int = 1, pad: int = 2
) -> Image.Image:
    """Stack grids of images, one row per entry, with ``labels[i]`` written left of row ``i``.

    ``rows[i]`` is ``(N_i, H, W)`` uint8. ``scale`` enlarges small images (nearest neighbour) so the
    grid stays legible at 32 px.
    """
    if not rows:
        raise ValueError("labelled_rows needs at least one row")
    strips = [make_grid(r, nrow=max(1, len(r)), pad=pad) for r in rows]
    width = max(s.shape[1] for s in strips)
    font_px = max(10, min(18, rows[0].shape[1] * scale // 3))
    font = label_font(font_px)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_w = max(int(probe.textlength(str(t), font=font)) for t in labels) + 8
    heights = [s.shape[0] * scale for s in strips]
    canvas = Image.new("L", (label_w + width * scale, sum(heights)), color=255)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for strip, text, hgt in zip(strips, labels, heights):
        im = Image.fromarray(strip)
        if scale != 1:
            im = im.resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
        canvas.paste(im, (label_w, y))
        draw.text((4, y + hgt // 2 - font_px // 2), str(text), fill=0, font=font)
        y += hgt
    return canvas


def save_png(image: np.ndarray | Image.Image, path: str | os.PathLike[str]) -> None:
    """Write a uint8 grayscale array (or PIL image) as PNG, atomically."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
