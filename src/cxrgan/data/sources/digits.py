"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), for the DGM reference implementation's
MNIST-style anomaly demonstration: prepare them at 32 px, train ``dgm`` with ``--normal-class 1``, and every
other digit is an anomaly. Classes are named ``0`` to ``9``; splits are drawn by ``prepare`` as for any source.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..decode import ArrayItem, Item
from .base import Record, Source, SourceOptions, choose_classes

CLASS_NAMES = [str(d) for d in range(10)]


class DigitsSource(Source):
    def items(self) -> Iterator[Item]:
        images = _load()[0]
        for rec, row in zip(self.records, self.details["rows"]):
            yield ArrayItem(array=images[row], origin=rec.origin)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.root, "images": len(self.records), "dataset": "sklearn.datasets.load_digits"}


def _load() -> tuple[np.ndarray, np.ndarray]:
    """``(1797, 8, 8)`` uint8 images (ink bright on black, 0-16 scaled to 0-255) and digit labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


def open_digits(opts: SourceOptions) -> DigitsSource:
    chosen = choose_classes(CLASS_NAMES, opts.classes, "the digits source")
    _, labels = _load()
    remap = {CLASS_NAMES.index(c): i for i, c in enumerate(chosen)}
    rows = [i for i, lab in enumerate(labels) if int(lab) in remap]
    records = [Record(f"digits:{i}", remap[int(labels[i])]) for i in rows]
    return DigitsSource(kind="digits", root="digits", class_names=chosen, records=records, details={"rows": rows})
