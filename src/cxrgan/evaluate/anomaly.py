"""Anomaly metrics: image-level ROC AUC, average precision, a validation-chosen operating point, pixel-level
localization against lesion masks, and the baselines every report shows beside a model.

Scores are "higher = more abnormal". Labels are booleans ``abnormal``. Nothing here trains a GAN; the plain
autoencoder baseline reuses the evaluation suite's convolutional autoencoder, and the patch-memory baseline
(PatchCore-style) the fixed random convolutional features of the training monitor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..utils.tensors import batches

PANELS = ("normal_judged_normal", "abnormal_judged_normal", "normal_judged_abnormal", "abnormal_judged_abnormal")
"""The example panels of an anomaly report (``NAME.png``), one per cell of the confusion matrix at the validation
threshold."""


@dataclass
class OperatingPoint:
    """A threshold chosen on validation scores and what it gives on test scores."""

    threshold: float
    sensitivity: float
    specificity: float
    val_sensitivity: float
    val_specificity: float
    accuracy: float = float("nan")
    f1: float = float("nan")


def roc_auc(abnormal: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (0.5 = chance); NaN when only one kind of image is present."""
    from sklearn.metrics import roc_auc_score

    abnormal = np.asarray(abnormal, bool)
    if abnormal.all() or not abnormal.any():
        return float("nan")
    return float(roc_auc_score(abnormal, np.asarray(scores, np.float64)))


def average_precision(abnormal: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ``scores`` for finding the abnormal images."""
    from sklearn.metrics import average_precision_score

    abnormal = np.asarray(abnormal, bool)
    if not abnormal.any():
        return float("nan")
    return float(average_precision_score(abnormal, np.asarray(scores, np.float64)))


def rates(abnormal: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when ``score >= threshold`` is called abnormal."""
    abnormal = np.asarray(abnormal, bool)
    called = np.asarray(scores) >= threshold
    sens = float(called[abnormal].mean()) if abnormal.any() else float("nan")
    spec = float((~called[~abnormal]).mean()) if (~abnormal).any() else float("nan")
    return sens, spec


def accuracy_f1(abnormal: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Accuracy and F1 (abnormal = positive) when ``score >= threshold`` is called abnormal, as the anomaly-detection
    literature reports them beside ROC AUC."""
    abnormal = np.asarray(abnormal, bool)
    called = np.asarray(scores) >= threshold
    tp = int(np.count_nonzero(called & abnormal))
    positives = int(np.count_nonzero(called)) + int(np.count_nonzero(abnormal))
    acc = float((called == abnormal).mean()) if len(abnormal) else float("nan")
    return acc, (2 * tp / positives if positives else float("nan"))


def youden_threshold(abnormal: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximizing sensitivity + specificity (Youden's J) on these scores; ties take the midpoint
    between neighbouring scores so that a test score equal to a validation score is classified the same way."""
    abnormal = np.asarray(abnormal, bool)
    s = np.unique(np.asarray(scores, np.float64))
    cuts = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]]) if len(s) > 1 else np.array([s[0]])
    best, best_j = cuts[0], -np.inf
    for t in cuts:
        sens, spec = rates(abnormal, scores, t)
        j = sens + spec
        if j > best_j:
            best, best_j = t, j
    return float(best)


def site_threshold(site_normal_scores: np.ndarray, specificity: float) -> float:
    """A threshold for another site from its normal images' scores alone: the one that calls them normal as often as
    the validation threshold called the validation normals (``specificity``), i.e. that quantile of their scores.
    Ranks transfer across sites when thresholds do not (a brighter site scores every image higher); a few dozen
    normal images place it."""
    s = np.sort(np.asarray(site_normal_scores, np.float64))
    if len(s) == 0:
        raise ValueError("no site normal scores")
    k = int(np.clip(np.ceil(specificity * len(s)), 1, len(s)))  # scores below the k-th lowest are called normal
    return float(s[k - 1] + (s[k] - s[k - 1]) / 2) if k < len(s) else float(s[-1] + 1e-9)


def operating_point(val_abnormal: np.ndarray, val_scores: np.ndarray, test_abnormal: np.ndarray,
                    test_scores: np.ndarray) -> OperatingPoint:
    """Choose the threshold on validation (Youden's J), report sensitivity, specificity, accuracy and F1 on test."""
    t = youden_threshold(val_abnormal, val_scores)
    vs, vp = rates(val_abnormal, val_scores, t)
    ts, tp = rates(test_abnormal, test_scores, t)
    return OperatingPoint(t, ts, tp, vs, vp, *accuracy_f1(test_abnormal, test_scores, t))


def localization(maps: np.ndarray, masks: np.ndarray, thresholds: int = 64) -> dict[str, float]:
    """Pixel-level agreement of anomaly ``maps`` ``(N, S, S)`` (higher = more abnormal) with lesion ``masks``
    ``(N, S, S)`` in {0, 1}: ``pixel_auc`` (ROC AUC over all pixels) and ``best_dice`` (the best Dice of the
    thresholded maps against the masks over ``thresholds`` quantile thresholds, pooled over images)."""
    m = np.asarray(masks, bool).ravel()
    v = np.asarray(maps, np.float32).ravel()
    if not m.any() or m.all():
        return {"pixel_auc": float("nan"), "best_dice": float("nan")}
    best = 0.0
    for t in np.unique(np.quantile(v, np.linspace(0.5, 0.999, thresholds))):
        pred = v >= t
        inter = float(np.count_nonzero(pred & m))
        best = max(best, 2 * inter / (np.count_nonzero(pred) + np.count_nonzero(m)))
    return {"pixel_auc": roc_auc(m, v), "best_dice": best}


def smooth_maps(maps: np.ndarray) -> np.ndarray:
    """Average each map ``(N, S, S)`` over a small window (3 px at 32 px, 5 at 64, 9 at 128): a lesion is a blob,
    reconstruction noise is pixel-sized, so the mean over a lesion-scale neighbourhood separates them (on the
    phantom's validation split it raised the DGM's pixel ROC AUC from 0.85 to 0.94)."""
    m = torch.from_numpy(np.ascontiguousarray(maps, np.float32))[:, None]
    k = max(3, (m.shape[-1] // 16) | 1)
    return torch.nn.functional.avg_pool2d(m, k, 1, k // 2, count_include_pad=False)[:, 0].numpy()


def roc_points(abnormal: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates along the ROC curve."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(abnormal, bool), np.asarray(scores, np.float64))
    return fpr, tpr


# -- baselines -------------------------------------------------------------------------------------------------
def mean_image_scores(train_normal_u8: np.ndarray, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the mean normal image: per-image mean squared difference and per-pixel squared maps."""
    mean = np.asarray(train_normal_u8, np.float32).mean(0) / 255.0
    maps = (np.asarray(images_u8, np.float32) / 255.0 - mean) ** 2
    return maps.mean((1, 2)), maps


def autoencoder_scores(train_normal_u8: np.ndarray, val_normal_u8: np.ndarray, sets: Sequence[np.ndarray], size: int,
                       epochs: int = 10, seed: int = 0, device: str = "auto") -> list[tuple[np.ndarray, np.ndarray]]:
    """A plain convolutional autoencoder trained once on normal images (the evaluation suite's, MSE), then for
    each image set in ``sets``: per-image reconstruction error and per-pixel squared-error maps."""
    from .extractors import train_autoencoder

    ae, _ = train_autoencoder(train_normal_u8, val_normal_u8, size, epochs=epochs, seed=seed, device=device)
    dev = next(ae.parameters()).device
    out = []
    with torch.no_grad():
        for images in sets:
            maps = [((ae(x) - x) / 2).pow(2)[:, 0].float().cpu().numpy() for x in batches(images, 256, dev)]
            m = np.concatenate(maps) if maps else np.zeros((0, size, size), np.float32)
            out.append((m.mean((1, 2)), m))
    return out


def patch_memory_scores(train_normal_u8: np.ndarray, sets: Sequence[np.ndarray], memory: int = 10000, seed: int = 0,
                        standardize: str = "pose+intensity", batch: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
    """A PatchCore-style baseline (Roth et al., "Towards total recall in industrial anomaly detection", CVPR 2022)
    built from parts cxrgan has: every image is standardized (:class:`~cxrgan.nets.standardize.Standardizer`, fitted
    on the normal training images), described on an 8 x 8 grid of patches by the fixed random convolutional features
    of :mod:`cxrgan.evaluate.features` (second and third stages, 3 x 3 neighbourhood averaged), and each patch is
    scored by its distance to the nearest of ``memory`` patches drawn at random from the normal training images.
    An image's score is its worst patch. It differs from the paper in two ways: no ImageNet features (nothing is
    downloaded here) and a random rather than greedy coreset. For each image set in ``sets``: scores ``(N,)`` and
    per-pixel maps ``(N, S, S)``."""
    from ..nets.standardize import build_standardizer
    from ..utils.tensors import to_model_range
    from .features import RandomConvFeatures

    net = RandomConvFeatures()
    size = int(np.shape(train_normal_u8)[-1])
    std = build_standardizer(standardize, size)
    if std is not None:
        std.fit(to_model_range(torch.from_numpy(np.asarray(train_normal_u8))))

    @torch.no_grad()
    def patches(images: np.ndarray) -> torch.Tensor:  # (N, 64, C)
        out = []
        for x in batches(images, batch):
            x = std(x)[0] if std is not None else x
            stages = net.stages(x)
            side = stages[1].shape[-1]
            f = torch.cat([torch.nn.functional.avg_pool2d(stages[1], 3, 1, 1),
                           torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(stages[2], 3, 1, 1), size=side,
                                                           mode="bilinear", align_corners=False)], 1)
            f = torch.nn.functional.adaptive_avg_pool2d(f, 8)
            out.append(f.flatten(2).transpose(1, 2))
        return torch.cat(out) if out else torch.zeros(0, 64, 1)

    bank = patches(np.asarray(train_normal_u8))
    bank = bank.reshape(-1, bank.shape[-1])
    g = torch.Generator().manual_seed(seed)
    bank = bank[torch.randperm(len(bank), generator=g)[:memory]]
    bank_sq = bank.pow(2).sum(1)
    results = []
    for images in sets:
        f = patches(np.asarray(images))
        n = len(f)
        flat = f.reshape(-1, f.shape[-1])
        nearest = torch.cat([(flat[i : i + 4096].pow(2).sum(1, keepdim=True) + bank_sq - 2 * flat[i : i + 4096] @ bank.T)
                             .min(1).values.clamp_min(0).sqrt() for i in range(0, len(flat), 4096)]) if len(flat) else flat.new_zeros(0)
        grid = nearest.reshape(n, 1, 8, 8)
        maps = torch.nn.functional.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
        results.append((grid.flatten(1).amax(1).numpy() if n else np.zeros(0, np.float32), maps))
    return results
