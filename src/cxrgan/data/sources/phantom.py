"""The embedded default: procedurally drawn chest radiograph phantoms with lesion masks."""

from __future__ import annotations

from typing import Iterator

from ...errors import CxrganError
from ..decode import Item, PhantomItem
from ..phantom import CLASS_NAMES, PhantomSpec
from .base import Record, Source, SourceOptions, choose_classes


class PhantomSource(Source):
    seed: int = 0

    def items(self) -> Iterator[Item]:
        for i, rec in enumerate(self.records):
            yield PhantomItem(index=i, label=self.details["labels"][i], seed=self.seed, origin=rec.origin)

    def describe(self) -> dict:
        d = {k: v for k, v in self.details.items() if k != "labels"}
        return {"kind": self.kind, "path": self.root, **d}


def open_phantom(opts: SourceOptions) -> PhantomSource:
    if opts.count < 1:
        raise CxrganError(f"--count must be at least 1 for the phantom source, got {opts.count}")
    chosen = choose_classes(CLASS_NAMES, opts.classes, "the phantom source")
    mix = list(opts.mix) if opts.mix else [0.4, 0.3, 0.3]
    if len(mix) != len(CLASS_NAMES):
        raise CxrganError(f"--mix needs {len(CLASS_NAMES)} fractions ({', '.join(CLASS_NAMES)}), got {len(mix)}")
    mix = [m if c in chosen else 0.0 for m, c in zip(mix, CLASS_NAMES)]
    if sum(mix) <= 0:
        raise CxrganError("--mix gives zero weight to every chosen class")
    spec = PhantomSpec(count=opts.count, mix=tuple(mix), seed=opts.seed)
    full = spec.labels()
    remap = {CLASS_NAMES.index(c): i for i, c in enumerate(chosen)}
    records = [Record(f"phantom:{i}", remap[int(lab)]) for i, lab in enumerate(full)]
    src = PhantomSource(kind="phantom", root="phantom", class_names=chosen, records=records, has_masks=True,
                        details={"count": opts.count, "mix": mix, "seed": opts.seed, "labels": [int(v) for v in full]})
    src.seed = opts.seed
    return src
