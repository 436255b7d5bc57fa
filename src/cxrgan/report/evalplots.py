"""Figures of the evaluation suite: centroid box plots, confusion matrices, study bar charts, closest pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.images import labelled_rows, save_png
from ..utils.io import atomic_path
from .plots import _plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def centroid_boxplots(study, path: Path, space: str) -> Path:
    """One panel per synthetic class (and one for real-vs-real), one box per real class."""
    plt = _plt()
    panels = [(f"synthetic {s}", study.distances[s]) for s in study.synthetic_classes]
    panels += [(f"real {r} (other half)", study.reference[r]) for r in study.real_classes]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1, 3.6), sharey=True, squeeze=False)
    for ax, (title, per) in zip(axes[0], panels):
        names = list(per)
        ax.boxplot([per[r] for r in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("centroid distance")
    fig.suptitle(f"Distance between latent centroids of {study.n} random images, over {study.draws} random draws "
                 f"(hence boxes, not single values); space {space}", fontsize=8)
    return _save(fig, path)


def confusion_figure(matrices: dict[str, np.ndarray], class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrices (summed over seeds), one panel per arm."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(matrices), figsize=(2.9 * len(matrices) + 0.5, 3.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8, color="black" if v < m.max() / 2 else "white")
        ax.set_xticks(range(len(class_names)), class_names, fontsize=7, rotation=30)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_title(name, fontsize=9)
    axes[0][0].set_ylabel("true", fontsize=8)
    return _save(fig, path)


def bar_chart(rows: Sequence[dict], metric: str, path: Path, title: str) -> Path:
    """Mean +- std of ``metric`` per row (``name``, ``{metric}_mean``, ``{metric}_std``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(rows) + 1.5), 3.4))
    names = [r["name"] for r in rows]
    means = [r[f"{metric}_mean"] for r in rows]
    stds = [r[f"{metric}_std"] for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="#4C72B0")
    lo = max(0.0, min(m - s for m, s in zip(means, stds)) - 0.05)
    ax.set_ylim(lo, 1.0)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def condition_chart(means: dict[str, dict[str, float]], stds: dict[str, dict[str, float]], ylabel: str, path: Path,
                    title: str) -> Path:
    """One line per arm (``means[arm] = {condition: value}``, error bars from ``stds``) across the test
    conditions, in the order of the first arm's conditions: how a figure holds under each shift."""
    plt = _plt()
    names = list(next(iter(means.values()), {}))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.42 * len(names) + 2.0), 3.6))
    for i, (arm, per) in enumerate(means.items()):
        xs = [j for j, c in enumerate(names) if c in per]
        ax.errorbar([x + 0.06 * (i - (len(means) - 1) / 2) for x in xs], [per[names[j]] for j in xs],
                    yerr=[stds.get(arm, {}).get(names[j], 0.0) or 0.0 for j in xs], marker="o", ms=3.5, lw=1, capsize=2, label=arm)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(means)))
    return _save(fig, path)


def closest_pairs(synth: np.ndarray, train: np.ndarray, pairs: Sequence[tuple[int, int, float]], path: Path) -> Path:
    """Top row: the synthetic images closest to a training image; bottom row: those training images."""
    top = np.stack([synth[i] for i, _, _ in pairs])
    bottom = np.stack([train[j] for _, j, _ in pairs])
    scale = max(1, 128 // synth.shape[-1])
    save_png(labelled_rows([top, bottom], ["synthetic", "nearest train"], scale=scale), path)
    return Path(path)
