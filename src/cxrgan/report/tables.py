"""Tables as files: one list of row dicts written as CSV and as a Markdown table, atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import write_text_atomic


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
