"""The reusable radiograph classifier: training, thresholds and the figures a classification study reports.

One function trains a classifier (``small`` CNN or ``resnet18``, written here, no downloaded weights) on
uint8 images with a class-weighted loss; the epoch with the best validation ROC AUC is kept, and for two
classes the decision threshold is chosen on the (real) validation split to maximize balanced accuracy.
:func:`classification_metrics` turns probabilities into accuracy, balanced accuracy, per-class precision,
recall and F1, ROC AUC and the confusion matrix; :func:`summarize_seeds` gives mean and standard deviation.

Images: ``(N, S, S)`` uint8 (bright = dense); labels ``(N,)`` int class indices into ``class_names``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import CxrganError
from ..nets.evaluators import build_classifier
from ..runtime.execution import pick_device
from ..utils.tensors import batches, to_model_range


@dataclass
class ClassifierConfig:
    """How a study's classifier is trained. ``augment``: random shifts (+-6%), small rotations and scalings
    and brightness/contrast jitter during training. ``select_epoch``: keep the epoch with the best
    validation ROC AUC (otherwise the last)."""

    arch: str = "small"
    width: int = 16
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True
    class_weighted: bool = True
    select_epoch: bool = True
    device: str = "auto"


@dataclass
class TrainedClassifier:
    """A trained classifier with its validation-chosen threshold (binary tasks) and training history."""

    model: nn.Module
    class_names: list[str]
    threshold: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    config: ClassifierConfig = field(default_factory=ClassifierConfig)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Class probabilities ``(N, C)`` for uint8 images ``(N, S, S)``."""
        self.model.eval()
        out = [F.softmax(self.model(_cl(x)).float(), 1).cpu().numpy() for x in batches(images, batch, self.device)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

    @torch.no_grad()
    def features(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Penultimate-layer features ``(N, F)`` float64."""
        self.model.eval()
        out = [self.model.features(_cl(x)).double().cpu().numpy() for x in batches(images, batch, self.device)]
        return np.concatenate(out)

    def predict(self, proba: np.ndarray) -> np.ndarray:
        """Class decisions from probabilities: the validation threshold for two classes, argmax otherwise."""
        if proba.shape[1] == 2 and self.threshold is not None:
            return (proba[:, 1] >= self.threshold).astype(np.int64)
        return proba.argmax(1)


def _cl(x: torch.Tensor) -> torch.Tensor:
    """Channels-last activations: about twice the CPU throughput of contiguous ones for these networks."""
    return x.contiguous(memory_format=torch.channels_last)


def random_affine(x: torch.Tensor, generator: torch.Generator, shift: float = 0.06, degrees: float = 5.0,
                  scale: tuple[float, float] = (0.95, 1.05), jitter: float = 0.1) -> torch.Tensor:
    """Batched random shift, rotation, scaling (border padded) and brightness/contrast jitter of ``x`` in [-1, 1]."""
    n = len(x)
    u = lambda lo, hi: torch.rand(n, generator=generator) * (hi - lo) + lo  # noqa: E731
    ang = u(-degrees, degrees) * math.pi / 180
    s = u(*scale)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / s, -torch.sin(ang) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / s, torch.cos(ang) / s
    theta[:, 0, 2], theta[:, 1, 2] = u(-2 * shift, 2 * shift), u(-2 * shift, 2 * shift)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if jitter > 0:
        contrast = u(1 - jitter, 1 + jitter).to(x.device)[:, None, None, None]
        bright = u(-jitter, jitter).to(x.device)[:, None, None, None]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean + bright).clamp(-1, 1)
    return out


def choose_threshold(y_true: np.ndarray, p_positive: np.ndarray) -> float:
    """The probability threshold for class 1 that maximizes balanced accuracy (Youden's J) on ``y_true``."""
    from sklearn.metrics import roc_curve

    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, p_positive)
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thr[best], 0.0), 1.0))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: of class 1 for two classes, macro one-vs-rest otherwise; NaN when a class is absent."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y_true, proba[:, 1]))
    if len(present) < proba.shape[1]:
        return float("nan")
    return float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, pred: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    p, r, f1, support = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "roc_auc": roc_auc(y_true, proba),
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }
    for i, c in enumerate(class_names):
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"] = float(p[i]), float(r[i]), float(f1[i])
    return out


def train_classifier(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     class_names: Sequence[str], cfg: ClassifierConfig | None = None, seed: int = 0,
                     progress: bool = False) -> TrainedClassifier:
    """Train a classifier on uint8 ``x_train`` ``(N, S, S)`` / ``y_train`` ``(N,)``; validation picks the
    epoch and the threshold. Deterministic for a seed on the CPU."""
    cfg = cfg or ClassifierConfig()
    y_train = np.asarray(y_train, np.int64)
    y_val = np.asarray(y_val, np.int64)
    c = len(class_names)
    counts = np.bincount(y_train, minlength=c)
    if (counts > 0).sum() < 2:
        raise CxrganError(f"the classifier's training set has images of {(counts > 0).sum()} class(es); it needs at least two")
    if len(x_val) == 0:
        raise CxrganError("the classifier needs a non-empty validation split to choose its epoch and threshold")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = pick_device(cfg.device)
    try:
        model = build_classifier(cfg.arch, c, cfg.width).to(device, memory_format=torch.channels_last)
    except ValueError as exc:
        raise CxrganError(f"classifier: {exc}") from None
    weights = torch.tensor(len(y_train) / (c * np.maximum(counts, 1)), dtype=torch.float32) if cfg.class_weighted else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(y_train) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2)
    x_all = torch.from_numpy(np.array(x_train, dtype=np.uint8))  # a writable copy (inputs may be memory-mapped)
    y_all = torch.from_numpy(y_train)
    result = TrainedClassifier(model, list(class_names), None, [], cfg)
    best_auc, best_state = -math.inf, None
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(y_all), generator=gen)
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            x = to_model_range(x_all[idx]).to(device)
            if cfg.augment:
                x = random_affine(x, gen)
            loss = F.cross_entropy(model(_cl(x)), y_all[idx].to(device), weight=None if weights is None else weights.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        proba = result.predict_proba(x_val)
        auc = roc_auc(y_val, proba)
        score = auc if not math.isnan(auc) else -float(F.nll_loss(torch.log(torch.from_numpy(proba) + 1e-9), torch.from_numpy(y_val)))
        result.history.append({"epoch": epoch + 1, "train_loss": total / len(y_train), "val_roc_auc": auc})
        if progress:
            print(f"  epoch {epoch + 1}/{cfg.epochs}: loss {total / len(y_train):.4f}, validation ROC AUC {auc:.4f}", flush=True)
        if not cfg.select_epoch or score >= best_auc:
            best_auc, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    if c == 2:
        result.threshold = choose_threshold(y_val, result.predict_proba(x_val)[:, 1])
    return result


def evaluate_classifier(clf: TrainedClassifier, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Metrics of ``clf`` on uint8 images ``x`` with labels ``y`` (decisions use the validation threshold)."""
    proba = clf.predict_proba(x)
    return classification_metrics(np.asarray(y, np.int64), proba, clf.predict(proba), clf.class_names)


SUMMARY_KEYS = ("roc_auc", "balanced_accuracy", "accuracy")


def summarize_seeds(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and standard deviation over seeds of every scalar metric (``KEY_mean``, ``KEY_std``)."""
    out: dict[str, float] = {"seeds": len(per_seed)}
    keys = [k for k, v in per_seed[0].items() if isinstance(v, (int, float))]
    for k in keys:
        vals = np.asarray([m[k] for m in per_seed], dtype=float)
        out[f"{k}_mean"], out[f"{k}_std"] = float(np.nanmean(vals)), float(np.nanstd(vals))
    out["confusion_sum"] = np.sum([m["confusion"] for m in per_seed], axis=0).tolist()  # type: ignore[assignment]
    return out


def config_dict(cfg: ClassifierConfig) -> dict[str, Any]:
    return asdict(cfg)
