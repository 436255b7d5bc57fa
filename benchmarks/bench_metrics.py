"""Speed of the evaluation suite: features and every distribution metric for 10,000 synthetic against 10,000
real 64 px images, next to a reference measured in the same run (SciPy ``sqrtm`` Fréchet distance, the
``prdc`` package's NumPy precision/recall/density/coverage, and a per-subset NumPy KID loop).

    python benchmarks/bench_metrics.py [--n 10000] [--skip-reference]

Target: cxrgan's path under a minute on a 2-core CPU. The images are the shared real radiographs resampled
with noise (random images where they are absent); the feature space is a freshly initialised classifier
network of the evaluation architecture (speed does not depend on its weights).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def cpu_line() -> str:
    return (f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"capability {torch.backends.cpu.get_cpu_capability()}")


def images(n: int, seed: int) -> np.ndarray:
    """``n`` 64 px uint8 images: real radiographs resampled with noise when ../shared/data has them, else noise."""
    from pathlib import Path

    rng = np.random.default_rng(seed)
    npz = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr_real_64.npz"
    if npz.is_file():
        base = np.load(npz)["train_images"]
        x = base[rng.integers(0, len(base), n)].astype(np.int16) + rng.integers(-8, 9, (n, 64, 64))
    else:
        x = rng.integers(0, 256, (n, 64, 64))
    return np.clip(x, 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--skip-reference", action="store_true")
    a = ap.parse_args()

    from cxrgan.evaluate.distribution import frechet_distance, kid, prdc
    from cxrgan.evaluate.extractors import FeatureSpace
    from cxrgan.nets.evaluators import SmallCNN

    print(cpu_line())
    real, fake = images(a.n, 0), images(a.n, 1)
    space = FeatureSpace(SmallCNN(2), "classifier", "bench")

    t0 = time.perf_counter()
    fr, ff = space.embed_u8(real), space.embed_u8(fake)
    t1 = time.perf_counter()
    fd = frechet_distance(fr, ff)
    kd = kid(fr, ff, subsets=100, subset_size=1000)
    pr = prdc(fr, ff, k=5)
    t2 = time.perf_counter()
    ours = t2 - t0
    print(f"cxrgan: features {t1 - t0:.1f} s ({2 * a.n / (t1 - t0):.0f} img/s), FD+KID+PRDC {t2 - t1:.1f} s, total {ours:.1f} s "
          f"for {a.n} vs {a.n} images, {fr.shape[1]}-d features")
    print(f"  FD {fd:.4g}  KID {kd[0]:.4g} +- {kd[1]:.2g}  " + "  ".join(f"{k} {v:.3f}" for k, v in pr.items()))
    if a.skip_reference:
        return
    from prdc import compute_prdc
    from scipy import linalg

    t0 = time.perf_counter()
    s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    fd_ref = ((fr.mean(0) - ff.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(100):
        x, y = fr[rng.choice(len(fr), 1000, replace=False)], ff[rng.choice(len(ff), 1000, replace=False)]
        d = x.shape[1]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        m = len(x)
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    pr_ref = compute_prdc(fr, ff, nearest_k=5)
    ref_metrics = time.perf_counter() - t0
    print(f"reference (scipy sqrtm FD, numpy KID loop, prdc package): metrics {ref_metrics:.1f} s")
    print(f"  FD {fd_ref:.4g}  KID {np.mean(vals):.4g}  " + "  ".join(f"{k} {float(v):.3f}" for k, v in pr_ref.items()))
    print(f"metrics speed-up vs reference: {ref_metrics / (t2 - t1):.2f}x; total (features included) {ours:.1f} s "
          f"({'under' if ours < 60 else 'OVER'} the one-minute target)")


if __name__ == "__main__":
    main()
