"""Label-free clusters of the training images, for self-conditioned unconditional generators.

An unconditional generator trained on a mixture of kinds of radiograph (say 26 % NORMAL, 74 % PNEUMONIA) can
under-draw the rarer kind for a long time. Self-conditioning (Liu et al., "Diverse Image Generation via
Self-Conditioned GANs", CVPR 2020) partitions the training images into clusters without labels, conditions G and
D on the cluster, and draws clusters for G in the data's proportions, so every cluster is drawn as often as it
occurs. Here the clusters are k-means clusters of the images' downsampled pixels, projected on their leading
principal components, computed once from the training set: deterministic, cheap (seconds for thousands of
images) and free of labels, so an unconditional family still never sees a class.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.tensors import to_model_range

FIT_ROWS = 20_000  # images the centroids are fitted on (a fixed random subset of larger sets)


def _pixel_features(images_u8: np.ndarray, size: int) -> np.ndarray:
    """``(N, S, S)`` uint8 -> ``(N, size * size)`` float32 images average-pooled to at most ``size`` pixels."""
    x = to_model_range(torch.from_numpy(np.ascontiguousarray(images_u8)))
    if x.shape[-1] > size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1).numpy()


def _kmeans(features: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns the centroids ``(k, D)``."""
    centres = [features[rng.integers(len(features))]]
    d2 = ((features - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(features), 1 / len(features))
        centres.append(features[rng.choice(len(features), p=p)])
        d2 = np.minimum(d2, ((features - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = _nearest(features, c)
        new = np.stack([features[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def _nearest(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (features ** 2).sum(1)[:, None] - 2 * features @ centres.T + (centres ** 2).sum(1)[None]
    return d.argmin(1)


def pixel_clusters(read: Callable[[np.ndarray], np.ndarray], n: int, k: int, seed: int = 0, size: int = 16,
                   dims: int = 32, iters: int = 100, chunk: int = 4096) -> np.ndarray:
    """Cluster index ``(n,)`` int64 of each of ``n`` images read by ``read(rows) -> (B, S, S) uint8``.

    Images are pooled to ``size`` px, centred, projected on their ``dims`` leading principal components and
    clustered by k-means with ``k`` centres (fitted on at most :data:`FIT_ROWS` images; seeded by ``seed``, so the
    same data always gives the same clusters). Every cluster holds at least one image."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot form {k} clusters from {n} images")
    rng = np.random.default_rng([seed, k])
    fit_rows = np.sort(rng.choice(n, FIT_ROWS, replace=False)) if n > FIT_ROWS else np.arange(n)
    fit = _pixel_features(read(fit_rows), size).astype(np.float64)
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    basis = vt[: min(dims, len(vt))].T
    centres = _kmeans((fit - mean) @ basis, k, rng, iters)
    out = np.empty(n, np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        out[rows] = _nearest((_pixel_features(read(rows), size) - mean) @ basis, centres)
    # A centre that kept no image (possible only with many duplicate images) takes one from the largest cluster.
    for j in np.setdiff1d(np.arange(k), np.unique(out)):
        out[int(np.argmax(np.bincount(out, minlength=k)[out]))] = j
    return out
