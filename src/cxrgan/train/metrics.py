"""``metrics.csv`` (one row per logging step) and optional TensorBoard event files."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import write_text_atomic

COLUMNS = ["step", "epoch", "kimg", "g_loss", "d_loss", "d_acc_real", "d_acc_fake", "g_grad_norm", "d_grad_norm",
           "img_per_s", "fd", "diversity", "diversity_real", "diversity_ratio", "vendi_ratio", "precision", "recall", "class_coverage",
           "class_within_ratio", "class_separation", "label_agreement", "collapse"]


class MetricsLog:
    """Appends rows to ``metrics.csv``; on resume, rows after the resumed step are dropped first."""

    def __init__(self, run: Path, resume_step: int | None = None, extra_columns: Sequence[str] = ()) -> None:
        self.path = run / "metrics.csv"
        self.columns = COLUMNS + [c for c in extra_columns if c not in COLUMNS]
        rows = read_metrics(self.path) if resume_step is not None and self.path.is_file() else []
        rows = [r for r in rows if _whole(r) and resume_step is not None and int(float(r["step"])) <= resume_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.path, buf.getvalue())
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, self.columns)
        self._tb = _tensorboard(run / "events")

    def write(self, row: dict[str, Any]) -> None:
        clean = {k: ("" if row.get(k) is None else _fmt(row[k])) for k in self.columns}
        self._writer.writerow(clean)
        self._fh.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _whole(row: dict) -> bool:
    """False for a row torn by a process killed while writing it (fields missing or extra, step unreadable)."""
    if None in row or any(v is None for v in row.values()):
        return False
    try:
        float(row["step"])
    except (KeyError, ValueError):
        return False
    return True


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(path))
