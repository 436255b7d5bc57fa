"""A flat folder of images plus a labels CSV (NIH ChestX-ray14 ``Data_Entry_2017.csv`` style).

Columns are found by name: image (``Image Index``, ``image``, ``filename``, ``file``, ``path``), label
(``Finding Labels``, ``label``, ``labels``, ``class``) and patient (``Patient ID``, ``patient_id``,
``patient``), or named with ``--image-column``/``--label-column``/``--patient-column``. Multi-label
findings are joined by ``|``. Without ``--multilabel``, an image is kept when exactly one of its findings
is among the chosen classes.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from ...errors import CxrganError
from ..decode import FileItem, Item
from .base import Record, Source, SourceOptions, choose_classes, hash_patient
from .folder import classify_file

IMAGE_COLUMNS = ("Image Index", "image", "filename", "file", "path", "image_path")
LABEL_COLUMNS = ("Finding Labels", "label", "labels", "class", "finding")
PATIENT_COLUMNS = ("Patient ID", "patient_id", "patient", "PatientID")


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, csv_path: Path, required: bool) -> str | None:
    if wanted:
        if wanted not in columns:
            raise CxrganError(
                f"{csv_path}: no column {wanted!r} for --{what}-column; the CSV has: {', '.join(columns)}"
            )
        return wanted
    lower = {c.lower(): c for c in columns}
    for d in defaults:
        if d.lower() in lower:
            return lower[d.lower()]
    if required:
        raise CxrganError(
            f"{csv_path}: cannot find the {what} column (looked for {', '.join(defaults)}); "
            f"name it with --{what}-column; the CSV has: {', '.join(columns)}"
        )
    return None


class CsvSource(Source):
    def items(self) -> Iterator[Item]:
        root = Path(self.root)
        for rec in self.records:
            yield FileItem(path=str(root / rec.origin), origin=rec.origin)


def open_csv(root: Path, opts: SourceOptions, salt: bytes) -> CsvSource:
    csv_path = Path(opts.labels_csv or "")
    if not csv_path.is_file():
        raise CxrganError(f"labels CSV {csv_path} does not exist; pass the file with --labels")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            columns = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CxrganError(f"{csv_path}: cannot read as CSV ({exc}); save it as UTF-8 comma-separated text") from None
    if not rows:
        raise CxrganError(f"{csv_path}: the CSV has no rows")
    img_col = _pick(columns, opts.image_column, IMAGE_COLUMNS, "image", csv_path, True)
    lab_col = _pick(columns, opts.label_column, LABEL_COLUMNS, "label", csv_path, True)
    pat_col = _pick(columns, opts.patient_column, PATIENT_COLUMNS, "patient", csv_path, False)

    def findings(row: dict[str, str]) -> list[str]:
        return [f.strip() for f in (row.get(lab_col) or "").split("|") if f.strip()]

    available = sorted({f for row in rows for f in findings(row)})
    chosen = choose_classes(available, opts.classes, f"column {lab_col!r} of {csv_path}")
    index = {c: i for i, c in enumerate(chosen)}
    # Index the folder once (recursively) so CSV names resolve in nested layouts like images_001/images/.
    on_disk = {p.name: p for p in sorted(root.rglob("*")) if p.is_file()}
    records: list[Record] = []
    skipped: list[dict[str, str]] = []
    for row in rows:
        name = (row.get(img_col) or "").strip()
        path = root / name if (root / name).is_file() else on_disk.get(Path(name).name)
        if not name or path is None:
            skipped.append({"origin": name or "(empty)", "reason": f"listed in {csv_path.name} but no such file under {root}"})
            continue
        origin = path.relative_to(root).as_posix()
        reason = classify_file(path)
        if reason:
            skipped.append({"origin": origin, "reason": reason})
            continue
        found = findings(row)
        kept = [f for f in found if f in index]
        if not kept:
            skipped.append({"origin": origin, "reason": f"label {'|'.join(found) or '(empty)'} is not among the chosen classes"})
            continue
        if opts.multilabel:
            label: int | tuple[int, ...] = tuple(int(c in kept) for c in chosen)
        elif len(kept) > 1:
            skipped.append({"origin": origin, "reason": f"has several findings ({'|'.join(kept)}); pass --multilabel to keep multi-label images"})
            continue
        else:
            label = index[kept[0]]
        pid = (row.get(pat_col) or "").strip() if pat_col else ""
        records.append(Record(origin, label, -1, hash_patient(salt, pid) if pid else None))
    if not records:
        raise CxrganError(f"{csv_path}: no usable rows (first reasons: {'; '.join(s['reason'] for s in skipped[:3])})")
    return CsvSource(
        kind="csv",
        root=str(root),
        class_names=chosen,
        records=records,
        multilabel=opts.multilabel,
        skipped=skipped,
        details={"labels_csv": csv_path.name, "image_column": img_col, "label_column": lab_col, "patient_column": pat_col},
    )
