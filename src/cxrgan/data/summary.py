"""``info`` and ``preview``: what a prepared dataset holds, in text and as a labelled grid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..utils.images import labelled_rows, save_png
from .dataset import PreparedDataset
from .splits import SPLIT_NAMES


def info_text(ds: PreparedDataset) -> str:
    """A human-readable summary: counts per class and split, balance, preprocessing, skipped files."""
    m = ds.manifest
    lines = [f"dataset   {ds.root}", f"source    {m['source'].get('kind')} ({m['source'].get('path')})",
             f"images    {len(ds)} x {ds.size}x{ds.size} uint8, task {m['task']}"]
    pre = m["preprocess"]
    lines.append("preproc   " + ", ".join(f"{k}={v}" for k, v in pre.items()))
    sp = m.get("splits", {})
    how = "kept from source" if sp.get("from_source") else f"fractions {sp.get('fractions')} seed {sp.get('seed')}"
    lines.append(f"splits    {how}{', grouped by patient' if sp.get('by_patient') else ''}")
    names = ds.class_names
    width = max(8, *(len(n) for n in names))
    lines.append("")
    lines.append(f"{'class':<{width}} " + " ".join(f"{s:>7}" for s in SPLIT_NAMES) + f" {'total':>7} {'share':>6}")
    counts = m["counts"]
    totals = {c: sum(counts[s][c] for s in SPLIT_NAMES) for c in names}
    grand = sum(totals.values()) or 1
    for c in names:
        lines.append(f"{c:<{width}} " + " ".join(f"{counts[s][c]:>7}" for s in SPLIT_NAMES)
                     + f" {totals[c]:>7} {100 * totals[c] / grand:>5.1f}%")
    nonzero = [v for v in totals.values() if v > 0]
    if len(nonzero) > 1:
        lines.append(f"imbalance (largest/smallest class): {max(nonzero) / min(nonzero):.2f}")
    if m.get("skipped"):
        reasons = Counter(s["reason"] for s in m["skipped"])
        lines.append("")
        lines.append(f"skipped   {len(m['skipped'])} file(s):")
        for reason, n in reasons.most_common(5):
            lines.append(f"  {n:>5} x {reason}")
    return "\n".join(lines)


def balance_summary(ds: PreparedDataset) -> dict:
    """Class counts per split and the imbalance ratio, as data (written by the demo as JSON)."""
    counts = ds.manifest["counts"]
    totals = {c: sum(counts[s][c] for s in SPLIT_NAMES) for c in ds.class_names}
    nz = [v for v in totals.values() if v]
    return {"counts": counts, "totals": totals, "imbalance_ratio": (max(nz) / min(nz)) if len(nz) > 1 else 1.0}


def preview(ds: PreparedDataset, out: str | Path, per_class: int = 8, split: str | None = "train", seed: int = 0) -> Path:
    """Write a PNG grid with one labelled row per class (``per_class`` random images each)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c in ds.class_names:
        idx = ds.indices(split, [c])
        if len(idx) == 0:
            continue
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        rows.append(np.asarray(ds.images[pick]))
        labels.append(f"{c} ({len(idx)})")
    scale = max(1, 96 // ds.size)
    out = Path(out)
    save_png(labelled_rows(rows, labels, scale=scale), out)
    return out
