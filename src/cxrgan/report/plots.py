"""Training curves: losses, discriminator accuracy, quality. One run or several on shared axes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.io import atomic_path
from .tables import column_title


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[dict[str, str]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(pts)
    return a[:, 0], a[:, 1]


def smooth(y: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Centered moving average over ``frac`` of the series (at least 1 point)."""
    k = max(1, int(len(y) * frac) | 1)
    if k == 1 or len(y) < k:
        return y
    pad = np.pad(y, (k // 2, k // 2), mode="edge")
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _with_ratio(rows: Sequence[dict[str, str]]) -> list[dict]:
    """Rows with ``diversity_ratio`` filled in from the pooled figures where a run predates that column."""
    from ..train.quality import diversity_ratio

    return [{**r, "diversity_ratio": diversity_ratio(r)} if r.get("fd") else r for r in rows]


def plot_run(run: Path) -> list[Path]:
    """Draw one run's training curves from its ``metrics.csv`` into ``RUN/plots/`` (:func:`plot_runs`); nothing when
    the run has logged no row yet. The CLI passes this to the training loop as its ``on_end`` hook."""
    from ..train.metrics import read_metrics

    try:
        rows = read_metrics(Path(run) / "metrics.csv")
    except OSError:
        return []
    return plot_runs({Path(run).name: rows}, Path(run) / "plots") if rows else []


def plot_runs(runs: dict[str, Sequence[dict[str, str]]], out_dir: Path) -> list[Path]:
    """Write losses.png (G and D), d_accuracy.png (real and fake), quality.png (FD, diversity) and, for families
    with their own columns, family.png (one panel per column) for ``{label: metrics rows}``; several runs share
    the axes, one colour per run. A figure none of the runs has figures for (D's, for a ddpm) is not drawn."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    panels = [
        ("losses.png", [("g_loss", "generator loss"), ("d_loss", "discriminator loss")]),
        ("d_accuracy.png", [("d_acc_real", "D accuracy on real"), ("d_acc_fake", "D accuracy on fake")]),
        ("quality.png", [("fd", "Fréchet distance (lower is better)"), ("diversity_ratio", "diversity / real diversity (worst class)")]),
    ]
    for name, keys in panels:
        if not any(len(_series(rows, key)[0]) for rows in runs.values() for key, _ in keys if key != "diversity_ratio"):
            continue  # nothing to draw: a family without a discriminator has no D losses or accuracies
        fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.6))
        for ax, (key, title) in zip(np.atleast_1d(axes), keys):
            for i, (label, rows) in enumerate(runs.items()):
                x, y = _series(_with_ratio(rows) if key == "diversity_ratio" else rows, key)
                if len(x):
                    ax.plot(x, smooth(y) if key not in ("fd", "diversity_ratio") else y, label=label, color=f"C{i}",
                            marker="o" if key in ("fd", "diversity_ratio") else None, ms=3)
            if key == "diversity_ratio":
                ax.axhline(1.0, color="grey", lw=0.7, ls=":")
            if key.startswith("d_acc"):
                ax.set_ylim(-0.02, 1.02)
                ax.axhline(0.5, color="grey", lw=0.7, ls=":")
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # reference lines alone carry no label
                ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out_dir / name)
        plt.close(fig)
        written.append(out_dir / name)
    extra = family_columns(runs)
    if extra:
        cols = min(3, len(extra))  # panels the size of the other figures' (losses.png, quality.png)
        nrows = -(-len(extra) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 3.6 * nrows), squeeze=False)
        for ax, key in zip(axes.ravel(), extra):
            for i, (label, rows) in enumerate(runs.items()):
                x, y = _series(rows, key)
                if len(x):
                    sparse = len(x) < 0.5 * len([r for r in rows if r.get("img_per_s")])  # measured at checkpoints only
                    ax.plot(x, y if sparse else smooth(y), label=label, color=f"C{i}", marker="o" if sparse else None, ms=3)
            if len(runs) > 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            ax.set_title(column_title(key))
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(extra):]:
            ax.axis("off")
        fig.tight_layout()
        _save(fig, out_dir / "family.png")
        plt.close(fig)
        written.append(out_dir / "family.png")
    return written


def family_columns(runs: dict[str, Sequence[dict[str, str]]]) -> list[str]:
    """The family's own metrics columns (loss terms, code recovery, validation AUCs) that hold values."""
    from ..train.metrics import COLUMNS

    keys: list[str] = []
    for rows in runs.values():
        for k in (rows[0].keys() if rows else ()):
            if k not in COLUMNS and k not in keys and any(r.get(k) not in (None, "") for r in rows):
                keys.append(k)
    return keys
