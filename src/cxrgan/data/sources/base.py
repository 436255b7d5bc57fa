"""What every source provides: cheap per-image metadata (records) and a lazy stream of decodable items."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ...errors import CxrganError
from ..decode import Item

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "testing": 2}


@dataclass(slots=True)
class Record:
    """Metadata of one candidate image, known before decoding (slotted: a source may list millions).

    label: class index (single-label) or a tuple of 0/1 per class (multi-label).
    split: 0/1/2 for train/val/test when the source fixes it, else -1.
    patient: salted hash of a patient id, or None when the source has none.
    """

    origin: str
    label: int | tuple[int, ...]
    split: int = -1
    patient: str | None = None


@dataclass
class SourceOptions:
    """Options shared by the source readers (all optional).

    classes: which classes to keep, in this order (default: all the source has).
    labels_csv / image_column / label_column / patient_column: flat folder plus a labels CSV.
    patient_regex: a regular expression whose first group extracts a patient id from a file's relative
        path (e.g. ``(person\\d+)_`` for Kermany file names); used for patient-grouped splits.
    multilabel: keep images with several findings as multi-hot labels (CSV sources).
    class_names: names for integer labels when the source carries none (npz, parquet).
    count / mix / seed: for the ``phantom`` source.
    """

    classes: Sequence[str] | None = None
    labels_csv: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    patient_column: str | None = None
    patient_regex: str | None = None
    multilabel: bool = False
    class_names: Sequence[str] | None = None
    count: int = 1200
    mix: Sequence[float] | None = None
    seed: int = 0


@dataclass
class Source:
    """A readable source. ``items()`` yields exactly one item per record, in record order."""

    kind: str
    root: str
    class_names: list[str]
    records: list[Record]
    multilabel: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)
    has_masks: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def items(self) -> Iterator[Item]:  # pragma: no cover - every reader overrides
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.root, **self.details}


def hash_patient(salt: bytes, patient_id: str) -> str:
    """Salted SHA-256 of a patient id; the id itself never leaves the reader."""
    return hashlib.sha256(salt + patient_id.encode("utf-8")).hexdigest()


def patient_from_regex(pattern: re.Pattern[str] | None, origin: str, salt: bytes) -> str | None:
    """The salted patient key that ``pattern`` extracts from ``origin`` (None when it does not match)."""
    if pattern is None:
        return None
    m = pattern.search(origin)
    if not m:
        return None
    return hash_patient(salt, m.group(1) if m.groups() else m.group(0))


def compile_patient_regex(regex: str | None) -> re.Pattern[str] | None:
    if not regex:
        return None
    try:
        return re.compile(regex)
    except re.error as exc:
        raise CxrganError(f"--patient-regex {regex!r} is not a valid regular expression ({exc})") from None


def choose_classes(available: Sequence[str], wanted: Sequence[str] | None, where: str) -> list[str]:
    """Validate ``wanted`` against ``available`` (case-sensitive, then case-insensitive)."""
    if not wanted:
        return list(available)
    by_lower = {a.lower(): a for a in available}
    chosen = []
    for w in wanted:
        if w in available:
            chosen.append(w)
        elif w.lower() in by_lower:
            chosen.append(by_lower[w.lower()])
        else:
            raise CxrganError(
                f"unknown class {w!r} in --classes; {where} has: {', '.join(available) or '(none)'}"
            )
    if len(set(chosen)) != len(chosen):
        raise CxrganError(f"--classes lists a class twice: {', '.join(wanted)}")
    return chosen
