"""Tables as files (one list of row dicts written as CSV and as a Markdown table, atomically) and the words for
their columns."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import write_text_atomic


# Metrics columns in words, with their direction or unit: the report's table headers and the panel titles of
# family.png. The files (metrics.csv, summary.csv) keep the short names.
_COLUMN_TITLES = {
    "fd": "FD (lower is better)", "kid": "KID (lower is better)", "best_fd": "best FD", "best_step": "best step",
    "g_loss": "G loss", "d_loss": "D loss", "d_acc_real": "D accuracy on real", "d_acc_fake": "D accuracy on generated",
    "diversity_ratio": "diversity / real (worst class)", "vendi_ratio": "distinct samples (Vendi) / real",
    "img_per_s": "images/s", "kimg": "images seen (thousands)", "class_coverage": "class coverage",
    "precision": "precision", "recall": "recall", "density": "density", "coverage": "coverage",
    "g_ms": "mode-seeking term of G (image distance / latent distance)",
    "g_adv": "G adversarial loss", "g_rec": "reconstruction L1 of normal inputs", "g_tv": "residual total variation",
    "g_enc": "latent encoding loss", "val_auc_best": "validation ROC AUC, best score",
    "d_class_ce": "D class cross-entropy on real images", "g_class_kl": "G class-share divergence",
    "g_class_ce": "G class cross-entropy", "d_code_mse": "D code recovery MSE (real codes)",
    "g_code_mse": "G code recovery MSE", "class_acc": "D class accuracy on generated images",
    "denoise_mse": "denoising loss (MSE of the predicted noise or velocity)",
}


def column_title(key: str) -> str:
    """A metrics column in words: the known columns by name, the DGM's per-score validation ROC AUC
    (``val_auc_SCORE``) and the semi-conditional code recovery (``code_BLOCK_acc`` / ``code_BLOCK_r2``); else the
    column's own name."""
    if key in _COLUMN_TITLES:
        return _COLUMN_TITLES[key]
    if key.startswith("val_auc_"):
        return f"validation ROC AUC, {key[8:]} score"
    if key.startswith("code_") and key.endswith(("_acc", "_r2")):
        block, _, kind = key[5:].rpartition("_")
        return f"{block} code recovered ({'accuracy' if kind == 'acc' else 'R²'})"
    return key


def fmt(v: Any) -> str:
    """A cell: floats to 4 significant digits, None empty."""
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(fmt(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(md) + "\n"


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], stem: str | Path) -> str:
    """Write ``stem.csv`` and ``stem.md`` with ``columns`` of ``rows``; returns the Markdown text."""
    stem = Path(stem)
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows({k: fmt(r.get(k)) for k in columns} for r in rows)
    write_text_atomic(stem.with_suffix(".csv"), buf.getvalue())
    md = markdown_table(rows, columns)
    write_text_atomic(stem.with_suffix(".md"), md)
    return md
