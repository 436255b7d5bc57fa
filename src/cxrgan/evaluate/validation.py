"""The distortion check: the standard validation of a feature space for FID (Heusel et al. 2017).

Real test images are distorted at four increasing strengths (Gaussian blur, Gaussian noise, salt-and-pepper,
black rectangles, and mode dropping: a growing share of the other classes, or k-means clusters, replaced by
one kept class) and compared with the real training split. A space passes when FD and KID rise strictly at
every strength for every distortion, precision falls under noise and blur, and recall and coverage fall
under mode dropping. A space that fails is not used to select checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..data.acquisition import gaussian_blur
from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..utils.io import write_json_atomic
from .distribution import compare
from .extractors import FeatureSpace, cached_dir

STRENGTHS = {
    "blur": (0.5, 1.0, 2.0, 4.0),          # Gaussian sigma in px at 64 px (scaled up for larger images)
    "noise": (0.025, 0.05, 0.1, 0.2),      # Gaussian noise std in [0, 1] intensity units
    "salt_pepper": (0.01, 0.03, 0.1, 0.3),  # fraction of pixels set to 0 or 255
    "occlusion": (0.15, 0.25, 0.35, 0.5),  # side of a black rectangle as a fraction of the image
    "mode_drop": (0.25, 0.5, 0.75, 1.0),   # share of the other modes replaced by the kept one
}


def distort(images: np.ndarray, kind: str, strength: float, seed: int = 0, labels: np.ndarray | None = None) -> np.ndarray:
    """``images`` uint8 ``(N, S, S)`` distorted by ``kind`` at ``strength`` (see ``STRENGTHS``); a new array."""
    rng = np.random.default_rng(seed)
    n, s, _ = images.shape
    if kind == "mode_drop":
        return images[mode_drop_rows(images, labels, strength, rng)]
    x = torch.from_numpy(np.asarray(images, np.float32) / 255.0).unsqueeze(1)
    if kind == "blur":
        x = gaussian_blur(x, strength * max(1.0, s / 64))
    elif kind == "noise":
        x = x + strength * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    elif kind == "salt_pepper":
        u = rng.random(x.shape)
        x = x.clone()
        x[torch.from_numpy(u < strength / 2)] = 0.0
        x[torch.from_numpy((u >= strength / 2) & (u < strength))] = 1.0
    elif kind == "occlusion":
        side = max(1, int(round(strength * s)))
        x = x.clone()
        for i in range(n):
            r0, c0 = rng.integers(0, s - side + 1, size=2)
            x[i, 0, r0 : r0 + side, c0 : c0 + side] = 0.0
    else:
        raise ValueError(f"unknown distortion {kind!r}")
    return np.clip(np.rint(x[:, 0].numpy() * 255), 0, 255).astype(np.uint8)


def mode_drop_rows(images: np.ndarray, labels: np.ndarray | None, share: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices where ``share`` of the images outside the kept mode are replaced by kept-mode images.

    The kept mode is the largest class when ``labels`` has two or more classes, otherwise the largest of
    four k-means clusters of 8x-downsampled pixels."""
    modes = labels if labels is not None and len(np.unique(labels)) > 1 else kmeans_modes(images, 4)
    kept = np.bincount(modes).argmax()
    rows = np.arange(len(images))
    others = np.flatnonzero(modes != kept)
    pool = np.flatnonzero(modes == kept)
    drop = rng.choice(others, size=int(round(share * len(others))), replace=False)
    rows[drop] = rng.choice(pool, size=len(drop), replace=True)
    return rows


def kmeans_modes(images: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    small = F.avg_pool2d(torch.from_numpy(np.asarray(images, np.float32)).unsqueeze(1), 8).flatten(1).numpy()
    return KMeans(k, n_init=4, random_state=seed).fit_predict(small)


@dataclass
class CheckResult:
    """Per distortion and strength the figures, and whether the space passed."""

    space: str
    rows: list[dict[str, Any]]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        head = f"feature space {self.space}: {'PASS' if self.passed else 'FAIL'}\n"
        lines = ["distortion    strength        FD        KID  precision  recall  density  coverage"]
        for r in self.rows:
            lines.append(f"{r['distortion']:<12} {r['strength']:>9.3g} {r['fd']:>9.4g} {r['kid']:>10.3g} {r['precision']:>10.3f}"
                         f" {r['recall']:>7.3f} {r['density']:>8.3f} {r['coverage']:>9.3f}")
        tail = "".join(f"\n  fails: {f}" for f in self.failures)
        return head + "\n".join(lines) + tail


def _rises(values: list[float]) -> bool:
    """Strictly rising at every strength."""
    return bool((np.diff(values) > 0).all())


def _falls(values: list[float], n: int) -> bool:
    """A fraction over ``n`` samples falls: lower at the strongest level than undistorted, and no step up by
    more than two binomial standard errors (sampling noise of a proportion)."""
    v = np.asarray(values, dtype=float)
    tol = 2 * np.sqrt(np.clip(v[:-1] * (1 - v[:-1]), 1e-4, None) / n)
    return bool(v[-1] < v[0] and (np.diff(v) <= tol).all())


def check_space(space: FeatureSpace, ds: PreparedDataset, max_images: int = 2000, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> CheckResult:
    """Run the distortion check for ``space``: real test images (distorted) against the real training split."""
    tr, te = ds.indices("train"), ds.indices("test")
    if len(te) < 20 or len(tr) < 20:
        raise CxrganError(f"{ds.root}: the distortion check needs at least 20 training and 20 test images")
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.choice(tr, size=min(max_images, len(tr)), replace=False))
    te = np.sort(rng.choice(te, size=min(max_images, len(te)), replace=False))
    ref = space.embed_u8(np.asarray(ds.images[tr]))
    test_imgs = np.asarray(ds.images[te])
    test_labels = None if ds.multilabel else np.asarray(ds.labels)[te]
    base = compare(ref, space.embed_u8(test_imgs))
    rows, failures = [], []
    for kind, strengths in STRENGTHS.items():
        series = [base]
        for st in strengths:
            series.append(compare(ref, space.embed_u8(distort(test_imgs, kind, st, seed, test_labels))))
            rows.append({"distortion": kind, "strength": st, **series[-1]})
        if progress:
            progress(f"  {space.ident}: {kind} done")
        for key in ("fd", "kid"):
            if not _rises([f[key] for f in series]):
                failures.append(f"{key.upper()} does not rise at every {kind} strength")
        falls = {"blur": ("precision",), "noise": ("precision",), "mode_drop": ("recall", "coverage")}.get(kind, ())
        for key in falls:
            if not _falls([f[key] for f in series], len(te)):
                failures.append(f"{key} does not fall with {kind}")
    rows.insert(0, {"distortion": "none", "strength": 0.0, **base})
    return CheckResult(space.ident, rows, failures)


def check_path(ds: PreparedDataset, space: FeatureSpace) -> Path:
    return cached_dir(ds) / f"check-{space.ident}.json"


def cached_check(ds: PreparedDataset, space: FeatureSpace, run_if_missing: bool = True) -> CheckResult | None:
    """The distortion check of ``space`` on ``ds``, from the cache or run now (and cached)."""
    path = check_path(ds, space)
    if path.is_file():
        d = json.loads(path.read_text())
        return CheckResult(d["space"], d["rows"], d["failures"])
    if not run_if_missing:
        return None
    result = check_space(space, ds)
    write_json_atomic(path, {"space": result.space, "rows": result.rows, "failures": result.failures, "passed": result.passed})
    return result
