"""A Hugging Face dataset saved as parquet: an ``image`` column of encoded bytes and a label column.

SOURCE is one ``.parquet`` file or a folder of them (e.g. ``data/train-00000-of-00001.parquet``); a file
whose name says train/valid(ation)/test fixes the split of its rows. Class names come from the Hugging
Face ``ClassLabel`` feature stored in the schema metadata, or from ``--class-names``; string labels are
used as they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from ...errors import CxrganError
from ..decode import BytesItem, Item
from .base import SPLIT_ALIASES, Record, Source, SourceOptions, choose_classes

LABEL_COLUMNS = ("labels", "label", "class", "target")


def _split_of(path: Path) -> int:
    tokens = re.split(r"[^a-z]+", path.as_posix().lower())
    for t in reversed(tokens):
        if t in SPLIT_ALIASES:
            return SPLIT_ALIASES[t]
    return -1


def _image_bytes(cell: Any) -> bytes | None:
    if isinstance(cell, dict):
        return cell.get("bytes")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    return None


class ParquetSource(Source):
    files: list[Path] = []
    image_column: str = "image"
    keep: set[tuple[int, int]] = set()

    def items(self) -> Iterator[Item]:
        import pyarrow.parquet as pq

        recs = iter(self.records)
        for fi, f in enumerate(self.files):
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256, columns=[self.image_column]):
                for cell in batch.column(0).to_pylist():
                    if (fi, row) in self.keep:
                        rec = next(recs)
                        yield BytesItem(data=_image_bytes(cell) or b"", origin=rec.origin)
                    row += 1


def open_parquet(path: Path, opts: SourceOptions) -> ParquetSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise CxrganError(f"{path}: no .parquet files found")
    names: list[str] | None = list(opts.class_names) if opts.class_names else None
    label_col = None
    image_col = opts.image_column or "image"
    labels_per_file = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CxrganError(f"{f}: cannot read as parquet ({exc}); the file is corrupt or not parquet") from None
        cols = pf.schema_arrow.names
        if image_col not in cols:
            raise CxrganError(f"{f}: no image column {image_col!r}; columns are {', '.join(cols)}; name it with --image-column")
        if opts.label_column:
            if opts.label_column not in cols:
                raise CxrganError(f"{f}: no column {opts.label_column!r} for --label-column; columns are {', '.join(cols)}")
            label_col = opts.label_column
        else:
            label_col = next((c for c in LABEL_COLUMNS if c in cols), None)
            if label_col is None:
                raise CxrganError(f"{f}: cannot find a label column (looked for {', '.join(LABEL_COLUMNS)}); name it with --label-column; columns are {', '.join(cols)}")
        meta = pf.schema_arrow.metadata or {}
        if names is None and b"huggingface" in meta:
            try:
                feats = json.loads(meta[b"huggingface"]).get("info", {}).get("features", {})
                names = list(feats.get(label_col, {}).get("names") or []) or None
            except (ValueError, AttributeError):
                names = None
        labels_per_file.append(pf.read(columns=[label_col]).column(0).to_pylist())
    all_labels = [v for labs in labels_per_file for v in labs]
    if all(isinstance(v, str) for v in all_labels):
        names = names or sorted(set(all_labels))
        as_index = [names.index(v) if v in names else -1 for v in all_labels]
    else:
        ints = [int(v) for v in all_labels]
        names = names or [f"class{i}" for i in range(max(ints) + 1)]
        as_index = ints
    chosen = choose_classes(names, opts.classes, f"{path}")
    records: list[Record] = []
    keep: set[tuple[int, int]] = set()
    k = 0
    for fi, (f, labs) in enumerate(zip(files, labels_per_file)):
        split = _split_of(f.relative_to(path) if path.is_dir() else Path(f.name))
        for row in range(len(labs)):
            value = as_index[k]
            k += 1
            if not 0 <= value < len(names):
                raise CxrganError(
                    f"{f}: row {row} has label {labs[row]!r}, which is not one of the classes "
                    f"({', '.join(names)}); pass the right names with --class-names"
                )
            if names[value] not in chosen:
                continue
            origin = f"{f.relative_to(path).as_posix() if path.is_dir() else f.name}:{row}"
            records.append(Record(origin, chosen.index(names[value]), split))
            keep.add((fi, row))
    src = ParquetSource(kind="parquet", root=str(path), class_names=chosen, records=records,
                        details={"label_column": label_col, "image_column": image_col,
                                 "splits_from_source": any(r.split >= 0 for r in records)})
    src.files, src.image_column, src.keep = files, image_col, keep
    return src
