"""A deterministic, seeded generator of frontal chest radiograph phantoms.

The package's embedded default data: nothing can be downloaded at run time, so cxrgan draws its own
radiographs. Each phantom is a density map of a frontal (PA) chest — body outline, shoulders, lungs with
vascular texture, mediastinum and spine, heart, hemidiaphragms over the abdomen, posterior and anterior
ribs, clavicles — that is tone-mapped like film, with exposure, positioning and quantum-noise variation.

Classes:

* ``NORMAL``: no lesion.
* ``PNEUMONIA``: focal (one to three rounded opacities) or lobar (an upper or lower lobe of one lung)
  consolidation: dense, fairly sharply bounded, one-sided.
* ``COVID``: bilateral, peripheral, lower-zone predominant, patchy ground-glass opacity: faint, many
  small patches.

Every image comes with a lesion mask (``uint8``, 1 inside the lesion), so disease localization can be
measured later. Images are a pure function of ``(seed, index, label, size)``: the same call gives the same
pixels on any machine, in any process, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CLASS_NAMES: tuple[str, ...] = ("NORMAL", "PNEUMONIA", "COVID")


@dataclass(frozen=True)
class PhantomSpec:
    """What to draw: ``count`` images of ``size`` px, classes mixed by ``mix`` (fractions), from ``seed``."""

    count: int = 1200
    size: int = 64
    mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    seed: int = 0

    def labels(self) -> np.ndarray:
        """The class index of every image, ``(count,)`` int64, exactly proportional to ``mix``."""
        mix = np.asarray(self.mix, dtype=np.float64)
        if mix.shape != (len(CLASS_NAMES),) or (mix < 0).any() or mix.sum() <= 0:
            raise ValueError(f"mix must be {len(CLASS_NAMES)} non-negative fractions, got {self.mix}")
        mix = mix / mix.sum()
        counts = np.floor(mix * self.count).astype(int)
        for i in np.argsort(-(mix * self.count - counts))[: self.count - counts.sum()]:
            counts[i] += 1
        labels = np.repeat(np.arange(len(CLASS_NAMES)), counts)
        np.random.default_rng([self.seed, 7]).shuffle(labels)
        return labels.astype(np.int64)


def _soft_inside(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth indicator of ``d < 0`` (``d`` a signed distance-like field), edge ``width`` wide."""
    return 0.5 * (1.0 - np.tanh(d / max(width, 1e-6)))


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0):
    """Normalised ellipse field: < 1 inside, = 1 on the border."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / ax
    v = (-(x - cx) * s + (y - cy) * c) / ay
    return np.sqrt(u * u + v * v)


def _band(dist: np.ndarray, half_width: float) -> np.ndarray:
    """A bone-like band profile around a centre line at distance ``dist``."""
    return np.exp(-0.5 * (dist / half_width) ** 4)


def _smooth_noise(rng: np.random.Generator, res: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std smooth noise of correlation length ``res / cells``, ``(res, res)`` float32."""
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = np.asarray(
        Image.fromarray(coarse, mode="F").resize((res + res * 3 // cells, res + res * 3 // cells), Image.BICUBIC)
    )
    off = res * 3 // cells // 2
    out = big[off : off + res, off : off + res]
    return (out - out.mean()) / (out.std() + 1e-6)


@dataclass
class _Chest:
    """The coordinate grid of one phantom (after positioning) and the anatomy later stages draw on."""

    x: np.ndarray
    y: np.ndarray
    lin: np.ndarray
    res: int
    width: float = 0.0
    body: np.ndarray | None = None
    dome_y: np.ndarray | None = None
    lung_ax: float = 0.0
    cx_r: float = 0.0
    cx_l: float = 0.0
    sides: dict[str, np.ndarray] = field(default_factory=dict)


def render(index: int, label: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom.

    Returns ``(image, mask)``: ``image`` ``(size, size)`` float32 in [0, 1] (bright = dense, as on film),
    ``mask`` ``(size, size)`` uint8 in {0, 1} marking the lesion (all zero for ``NORMAL``). The stages below draw
    from one random stream in a fixed order, so a phantom is a pure function of its arguments.
    """
    if label not in range(len(CLASS_NAMES)):
        raise ValueError(f"label must be in 0..{len(CLASS_NAMES) - 1}, got {label}")
    rng = np.random.default_rng([seed, index, label, 1])
    res = max(128, size)
    lin = (np.arange(res, dtype=np.float32) + 0.5) / res * 2.0 - 1.0
    y0, x0 = np.meshgrid(lin, lin, indexing="ij")
    c = _positioned(rng, x0, y0, lin, res)
    dens = _body(rng, c)
    dens = _lungs(rng, c, dens)
    dens = _mediastinum(rng, c, dens)
    dens = _bones(rng, c, dens)
    dens, lesion = _disease(rng, c, dens, CLASS_NAMES[label])
    img = _film(rng, dens)
    mask = (lesion > 0.35).astype(np.float32)
    if res != size:
        img = np.asarray(Image.fromarray(img, mode="F").resize((size, size), Image.LANCZOS))
        mask = np.asarray(Image.fromarray(mask, mode="F").resize((size, size), Image.BOX))
    return np.clip(img, 0, 1).astype(np.float32), (mask >= 0.5).astype(np.uint8)


def _positioned(rng: np.random.Generator, x0: np.ndarray, y0: np.ndarray, lin: np.ndarray, res: int) -> _Chest:
    """Patient positioning: scale, shift, slight rotation of the grid."""
    scale = rng.uniform(0.9, 1.04)
    tx, ty = rng.normal(0, 0.03), rng.normal(0.02, 0.03)
    th = np.deg2rad(rng.normal(0, 2.5))
    xs, ys = (x0 - tx) / scale, (y0 - ty) / scale
    x = xs * np.cos(th) + ys * np.sin(th)
    y = -xs * np.sin(th) + ys * np.cos(th)
    return _Chest(x=x, y=y, lin=lin, res=res)


def _body(rng: np.random.Generator, c: _Chest) -> np.ndarray:
    """Soft tissue of the thorax and shoulders; the hemidiaphragm domes (the right one, image left, sits higher)
    and the abdomen below them. Returns the density."""
    x, y = c.x, c.y
    c.width = width = rng.uniform(0.82, 0.95)  # thorax half-width
    body = _soft_inside(_ellipse(x, y, 0, 0.2, width, 1.15) - 1, 0.03)
    for sgn in (-1.0, 1.0):  # shoulders
        body = np.maximum(body, _soft_inside(_ellipse(x, y, sgn * 0.62, -0.66, 0.42, 0.22, sgn * 0.25) - 1, 0.05))
    c.body = body = np.maximum(body, _soft_inside(np.abs(x) - 0.2, 0.03) * (y < -0.6))
    dens = 0.42 * body * (1.0 + 0.08 * _smooth_noise(rng, c.res, 3))
    dome_r, dome_l = rng.uniform(0.30, 0.42), rng.uniform(0.36, 0.48)
    c.lung_ax = lung_ax = width * rng.uniform(0.4, 0.44)
    c.cx_r, c.cx_l = cx_r, cx_l = -width * 0.48, width * 0.48
    c.dome_y = np.where(x < 0, dome_r + 0.35 * ((x - cx_r) / lung_ax) ** 2, dome_l + 0.35 * ((x - cx_l) / lung_ax) ** 2)
    below = _soft_inside(c.dome_y - y, 0.02)
    dens += 0.16 * below * body
    return dens


def _lungs(rng: np.random.Generator, c: _Chest, dens: np.ndarray) -> np.ndarray:
    """Lungs: air lowers density; vascular markings fade from the hila to the periphery."""
    x, y = c.x, c.y
    lung_ay = rng.uniform(0.62, 0.7)
    lungs = np.zeros_like(x)
    for side, cx in (("R", c.cx_r), ("L", c.cx_l)):
        shape = _soft_inside(_ellipse(x, y, cx, -0.08, c.lung_ax, lung_ay) - 1, 0.025)
        lung = shape * _soft_inside(y - c.dome_y, 0.015)
        c.sides[side] = lung
        lungs = np.maximum(lungs, lung)
    hilum = np.exp(-(((np.abs(x) - 0.22) / 0.25) ** 2) - ((y + 0.05) / 0.4) ** 2)
    vessels = np.clip(_smooth_noise(rng, c.res, 22), 0, None) * 0.07 * (0.35 + hilum)
    dens -= lungs * (rng.uniform(0.3, 0.36) - vessels - 0.04 * hilum)
    return dens


def _mediastinum(rng: np.random.Generator, c: _Chest, dens: np.ndarray) -> np.ndarray:
    """Mediastinum, spine with vertebral end plates, heart."""
    x, y, body = c.x, c.y, c.body
    dens += 0.16 * _soft_inside(np.abs(x - 0.02) - 0.12, 0.03) * body * (y > -0.9)
    spine = _soft_inside(np.abs(x) - 0.065, 0.015) * body
    dens += spine * (0.08 + 0.03 * np.cos(y * np.pi * 7.5 + rng.uniform(0, 6.3)))
    heart_w = rng.uniform(0.3, 0.4)
    heart = _soft_inside(_ellipse(x, y, 0.14, 0.27, heart_w, 0.27, -0.3) - 1, 0.03)
    dens += 0.2 * heart
    return dens


def _bones(rng: np.random.Generator, c: _Chest, dens: np.ndarray) -> np.ndarray:
    """Ribs (posterior ribs curve down laterally, anterior ribs run down medially, fainter) and clavicles."""
    x, y, body, width = c.x, c.y, c.body, c.width
    thorax = body * _soft_inside(y - c.dome_y - 0.1, 0.05)
    ribs = np.zeros_like(x)
    for k in range(10):
        yk = -0.7 + 0.115 * k + rng.normal(0, 0.008)
        t = np.clip((np.abs(x) - 0.07) / (width * 0.92), 0, 1)
        post = _band(y - (yk - 0.06 * t + 0.3 * t**2), 0.022) * (np.abs(x) > 0.06) * (t < 1)
        ant = _band(y - (yk + 0.22 + 0.25 * (1 - t) ** 2 - 0.1), 0.03) * (t > 0.25) * (t < 1)
        ribs += post + 0.4 * ant
    dens += 0.05 * np.clip(ribs, 0, 1.5) * thorax
    for sgn in (-1.0, 1.0):  # clavicles
        t = np.clip((sgn * x - 0.08) / 0.55, 0, 1)
        line = -0.6 - 0.16 * t + 0.1 * t**2
        dens += 0.16 * _band(y - line, 0.03) * ((sgn * x) > 0.08) * ((sgn * x) < 0.66) * body
    return dens


def _disease(rng: np.random.Generator, c: _Chest, dens: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pneumonia (focal or lobar consolidation of one lung) or COVID (bilateral, peripheral, lower patchy
    opacities); ``(density, lesion map)``, the lesion map zero for a normal chest."""
    x, y, lin, res = c.x, c.y, c.lin, c.res
    lesion = np.zeros_like(x)
    if name == "PNEUMONIA":
        side = c.sides["R" if rng.random() < 0.55 else "L"]
        ys_, xs_ = np.nonzero(side > 0.6)
        if rng.random() < 0.6:  # focal consolidation: one to three rounded opacities
            for _ in range(rng.integers(1, 4)):
                j = rng.integers(len(ys_))
                r = rng.uniform(0.09, 0.2)
                d = _ellipse(x, y, lin[xs_[j]], lin[ys_[j]], r, r * rng.uniform(0.7, 1.3), rng.uniform(0, 3.1))
                d = d + 0.25 * _smooth_noise(rng, res, 10)
                lesion = np.maximum(lesion, _soft_inside(d - 1, 0.12))
        else:  # lobar consolidation: the upper or lower part of one lung
            cut = rng.uniform(-0.25, 0.05) + 0.2 * (x - x.mean())
            region = _soft_inside(cut - y, 0.05) if rng.random() < 0.65 else _soft_inside(y - cut, 0.05)
            lesion = region * np.clip(0.85 + 0.25 * _smooth_noise(rng, res, 8), 0, 1)
        lesion = lesion * side
        dens += rng.uniform(0.22, 0.3) * lesion
    elif name == "COVID":
        for side_name, cx in (("R", c.cx_r), ("L", c.cx_l)):
            lateral = np.clip((x - cx) / c.lung_ax * (1 if side_name == "L" else -1) + 0.3, 0, 1.2)
            lower = _soft_inside(-(y - rng.uniform(-0.25, 0.0)), 0.15)
            patches = _soft_inside(rng.uniform(0.2, 0.7) - _smooth_noise(rng, res, 14), 0.25)
            lesion = np.maximum(lesion, c.sides[side_name] * patches * np.clip(lateral * (0.4 + lower), 0, 1))
        dens += rng.uniform(0.11, 0.16) * lesion
    return dens, lesion


def _film(rng: np.random.Generator, dens: np.ndarray) -> np.ndarray:
    """Film response, exposure and noise: the image in [0, 1], float32."""
    gain = rng.uniform(2.4, 3.0)
    img = 1.0 - np.exp(-gain * np.clip(dens, 0, None))
    img = img / (1.0 - np.exp(-gain * 0.9))
    img = np.clip(img * rng.uniform(0.9, 1.08) + rng.normal(0, 0.03), 0, 1) ** rng.uniform(0.85, 1.2)
    img = img + rng.normal(0, rng.uniform(0.008, 0.02), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)
