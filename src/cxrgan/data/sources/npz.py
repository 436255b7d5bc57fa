"""MedMNIST-style ``.npz`` files: ``{train,val,test}_images`` and ``{train,val,test}_labels``.

Labels ``(N,)`` or ``(N, 1)`` are single-label; ``(N, C)`` with C > 1 is multi-label (chestmnist). Class
names come from a ``class_names`` array in the file, from ``--class-names``, or from the MedMNIST
definitions for the known chest files; splits are kept from the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import CxrganError
from ..decode import ArrayItem, Item
from .base import SPLIT_NAMES, Record, Source, SourceOptions, choose_classes

KNOWN_CLASS_NAMES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "chestmnist": [
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ],
}


class NpzSource(Source):
    keep: list[tuple[int, int]] = []  # (split index, row in that split) per record

    def items(self) -> Iterator[Item]:
        with np.load(self.root, allow_pickle=False) as z:
            current, arr = -1, None
            for rec, (split, row) in zip(self.records, self.keep):
                if split != current:
                    arr = z[f"{SPLIT_NAMES[split]}_images"]
                    current = split
                yield ArrayItem(array=np.array(arr[row]), origin=rec.origin)


def open_npz(path: Path, opts: SourceOptions) -> NpzSource:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{path}: cannot open as .npz ({exc}); the file is corrupt or not an npz archive") from None
    with z:
        keys = set(z.files)
        splits = [s for s in SPLIT_NAMES if f"{s}_images" in keys]
        if not splits:
            raise CxrganError(
                f"{path}: no '<split>_images' arrays (found {', '.join(sorted(keys)) or 'none'}); "
                "expected the MedMNIST layout train_images/train_labels, val_*, test_*"
            )
        labels_by_split = {}
        for s in splits:
            if f"{s}_labels" not in keys:
                raise CxrganError(f"{path}: has {s}_images but no {s}_labels")
            lab = np.asarray(z[f"{s}_labels"])
            n = z[f"{s}_images"].shape[0]
            if lab.shape[0] != n:
                raise CxrganError(f"{path}: {s}_labels has {lab.shape[0]} rows but {s}_images has {n}")
            labels_by_split[s] = lab.reshape(n, -1) if lab.ndim > 1 else lab.reshape(n, 1)
        width = {v.shape[1] for v in labels_by_split.values()}
        if len(width) != 1:
            raise CxrganError(f"{path}: label arrays differ in width across splits ({sorted(width)})")
        multilabel = width.pop() > 1
        if "class_names" in keys:
            names = [str(n) for n in z["class_names"]]
        elif opts.class_names:
            names = list(opts.class_names)
        elif path.stem.split("_")[0].lower() in KNOWN_CLASS_NAMES:
            names = KNOWN_CLASS_NAMES[path.stem.split("_")[0].lower()]
        else:
            n_cls = (max(int(v.max()) for v in labels_by_split.values()) + 1) if not multilabel else next(iter(labels_by_split.values())).shape[1]
            names = [f"class{i}" for i in range(n_cls)]
    chosen = choose_classes(names, opts.classes, f"{path}")
    col = [names.index(c) for c in chosen]
    records: list[Record] = []
    keep: list[tuple[int, int]] = []
    for s in splits:
        si = SPLIT_NAMES.index(s)
        for row, lab in enumerate(labels_by_split[s]):
            if multilabel:
                vec = tuple(int(lab[c] > 0) for c in col)
                if opts.classes and not any(vec):
                    continue
                label: int | tuple[int, ...] = vec
            else:
                value = int(lab[0])
                if not 0 <= value < len(names):
                    raise CxrganError(
                        f"{path}: {s}_labels[{row}] = {value} is not a class index for the {len(names)} "
                        f"class names ({', '.join(names)}); pass the right names with --class-names"
                    )
                if names[value] not in chosen:
                    continue
                label = chosen.index(names[value])
            records.append(Record(f"{path.name}:{s}[{row}]", label, si))
            keep.append((si, row))
    src = NpzSource(kind="npz", root=str(path), class_names=chosen, records=records, multilabel=multilabel,
                    details={"splits_from_source": True})
    src.keep = keep
    return src
