"""``compare``: the comparative study of several runs (the GAN/DCGAN/CGAN/BiGAN comparison).

Writes combined loss and D-accuracy figures (one colour per run), a combined sample grid (one row per
run, one per class for conditional runs, all from the best checkpoints with a fixed seed) and a table of
final figures (``summary.csv`` and ``summary.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import CxrganError
from ..train.metrics import read_metrics
from ..utils.images import labelled_rows, save_png
from .plots import plot_runs
from .tables import write_table

log = logging.getLogger("cxrgan.compare")

SUMMARY_COLUMNS = ["run", "family", "classes", "steps", "kimg", "g_loss", "d_loss", "d_acc_real", "d_acc_fake",
                   "best_fd", "best_step", "diversity_ratio", "img_per_s"]


def _tail_mean(rows: list[dict[str, str]], key: str, frac: float = 0.1) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    if not vals:
        return None
    k = max(1, int(len(vals) * frac))
    return float(np.mean(vals[-k:]))


def summarize(run: Path, rows: list[dict[str, str]] | None = None) -> dict:
    """Final figures of one run (means over the last 10% of logged rows); ``rows`` if already read."""
    from ..train import checkpoint as ckpt
    from ..train.quality import diversity_ratio
    from ..train.rundir import read_run

    cfg, _ = read_run(run)
    rows = read_metrics(run / "metrics.csv") if rows is None else rows
    evals = [r for r in rows if r.get("fd")]
    # The checkpoint the run chose (checkpoints/best.json, by its own selection rule); none when no checkpoint kept
    # its diversity.
    chosen = ckpt.best_step(run)
    best = next((r for r in evals if int(float(r["step"])) == chosen), None)
    last = evals[-1] if evals else None
    return {
        "run": run.name, "family": cfg.model.family, "classes": ",".join(cfg.data.classes) or "all",
        "steps": int(float(rows[-1]["step"])) if rows else 0, "kimg": float(rows[-1]["kimg"]) if rows else 0.0,
        "g_loss": _tail_mean(rows, "g_loss"), "d_loss": _tail_mean(rows, "d_loss"),
        "d_acc_real": _tail_mean(rows, "d_acc_real"), "d_acc_fake": _tail_mean(rows, "d_acc_fake"),
        "best_fd": float(best["fd"]) if best else None, "best_step": int(float(best["step"])) if best else None,
        "diversity_ratio": diversity_ratio(last) if last else None,
        "img_per_s": float(np.median([float(r["img_per_s"]) for r in rows if r.get("img_per_s")])) if rows else None,
    }


def compare(runs: Sequence[str | Path], out: str | Path, per_row: int = 8, seed: int = 0, checkpoint: str = "best") -> Path:
    """Write the comparative study of ``runs`` into ``out``; returns ``out``."""
    from ..sample import generate, load_run

    if not runs:
        raise CxrganError("compare needs at least one run directory")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(r) for r in runs]
    labels = [p.name for p in paths]
    if len(set(labels)) != len(labels):
        labels = [str(p) for p in paths]
    metrics = {}
    for label, p in zip(labels, paths):
        if not (p / "metrics.csv").is_file():
            raise CxrganError(f"{p} has no metrics.csv; is it a cxrgan run directory?")
        metrics[label] = read_metrics(p / "metrics.csv")
    plot_runs(metrics, out)
    rows, row_labels, sizes = [], [], set()
    for label, p in zip(labels, paths):
        lr = load_run(p, checkpoint)
        if lr.family.translates:
            log.info("%s is a %s run (image to image): it has no row in samples.png", p, lr.cfg.model.family)
            continue
        sizes.add(int(lr.info["image_size"]))
        names = lr.info["class_names"]
        classes = lr.trained_classes if lr.family.conditional else [None]
        for c in classes:
            g = torch.Generator().manual_seed(seed)
            z = lr.family.sample_z(per_row, generator=g)  # semicond latents carry code blocks after the noise
            y = torch.full((per_row,), names.index(c) if c else 0, dtype=torch.long)
            rows.append(generate(lr, z, y))
            tag = c or (",".join(lr.cfg.data.classes) if lr.cfg.data.classes else "")
            row_labels.append(f"{label} ({lr.cfg.model.family}{': ' + tag if tag else ''})")
    if len(sizes) == 1 and rows:
        save_png(labelled_rows(rows, row_labels, scale=max(1, 64 // sizes.pop())), out / "samples.png")
    elif len(sizes) > 1:
        log.warning("runs have different image sizes (%s): no combined samples.png; compare runs of one size "
                    "for a grid", ", ".join(map(str, sorted(sizes))))
    summary = [summarize(p, metrics[label]) | {"run": label} for label, p in zip(labels, paths)]
    write_table(summary, SUMMARY_COLUMNS, out / "summary")
    return out
