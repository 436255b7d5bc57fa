"""A folder of radiographs: one sub-folder per class, optionally under train/val/test folders.

``ROOT/CLASS/**/file`` or ``ROOT/{train,val,test}/CLASS/**/file``. PNG, JPEG, BMP, TIFF and DICOM may be
mixed (DICOM also recognised without a suffix by its ``DICM`` magic). Other files are listed as skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ...errors import CxrganError
from ..decode import DICOM_SUFFIXES, RASTER_SUFFIXES, FileItem, Item, is_dicom_file
from .base import SPLIT_ALIASES, Record, Source, SourceOptions, choose_classes, compile_patient_regex, patient_from_regex


def iter_files(folder: Path) -> Iterator[Path]:
    """All files below ``folder`` in a deterministic order (each folder's files sorted, then its sub-folders in
    sorted order), one at a time: a folder of a million images is never held as a million paths."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            yield Path(dirpath) / f


def walk_files(folder: Path) -> list[Path]:
    """:func:`iter_files` as a list."""
    return list(iter_files(folder))


def classify_file(path: Path) -> str | None:
    """None when ``path`` is a readable image kind, else the reason it is skipped."""
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES or suffix in DICOM_SUFFIXES:
        return None
    if is_dicom_file(path):
        return None
    return f"not an image file (suffix {suffix or 'none'}); supported: PNG, JPEG, BMP, TIFF, DICOM"


class FolderSource(Source):
    def items(self) -> Iterator[Item]:
        root = Path(self.root)
        for rec in self.records:
            yield FileItem(path=str(root / rec.origin), origin=rec.origin)


def open_folder(root: Path, opts: SourceOptions, salt: bytes) -> FolderSource:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise CxrganError(
            f"{root}: no class sub-folders found; expected ROOT/CLASS/images (e.g. NORMAL/, PNEUMONIA/), "
            "or pass a flat folder with --labels FILE.csv"
        )
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) == len(subdirs):
        layout = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs]
    else:
        layout = [(-1, root)]
    class_dirs: dict[str, list[tuple[int, Path]]] = {}
    for split, base in layout:
        for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            class_dirs.setdefault(d.name, []).append((split, d))
    available = sorted(class_dirs)
    chosen = choose_classes(available, opts.classes, f"folder {root}")
    pattern = compile_patient_regex(opts.patient_regex)
    records: list[Record] = []
    skipped: list[dict[str, str]] = []
    for label, name in enumerate(chosen):
        n_images = 0
        for split, d in class_dirs[name]:
            for f in iter_files(d):
                origin = f.relative_to(root).as_posix()
                if f.name.startswith("."):
                    skipped.append({"origin": origin, "reason": "hidden file"})
                    continue
                reason = classify_file(f)
                if reason:
                    skipped.append({"origin": origin, "reason": reason})
                    continue
                records.append(Record(origin, label, split, patient_from_regex(pattern, origin, salt)))
                n_images += 1
        if n_images == 0:
            where = ", ".join(str(d) for _, d in class_dirs[name])
            raise CxrganError(
                f"class folder {where} contains no images; add images or leave the class out with "
                f"--classes {','.join(c for c in chosen if c != name) or 'CLASS'}"
            )
    return FolderSource(
        kind="folder",
        root=str(root),
        class_names=chosen,
        records=records,
        skipped=skipped,
        details={"splits_from_source": layout[0][0] != -1, "patient_regex": opts.patient_regex},
    )
