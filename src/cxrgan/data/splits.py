"""Stratified, patient-grouped train/val/test splits.

Per class, whole patient groups (an image without a patient id is its own group) are shuffled with the
seed and fill ``test``, then ``val``, to their fractions of that class; the rest is ``train``. So class
balance is kept in every split and no patient is in two splits. Splits fixed by the source are kept.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

from ..errors import CxrganError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> (0.7, 0.15, 0.15); must be three non-negative numbers summing to 1."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise CxrganError(f"--split {text!r}: expected three fractions like 0.7,0.15,0.15") from None
    if len(vals) != 3 or min(vals) < 0 or abs(sum(vals) - 1.0) > 1e-6 or vals[0] <= 0:
        raise CxrganError(f"--split {text!r}: expected three fractions (train,val,test) summing to 1, train > 0")
    return vals[0], vals[1], vals[2]


def assign_splits(
    strata: Sequence[int],
    groups: Sequence[str | None],
    fixed: Sequence[int],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per image, ``(N,)`` uint8.

    strata: the class used for stratification, per image. groups: patient key or None, per image.
    fixed: the split a source fixed (0/1/2), or -1 where it fixed none.
    """
    n = len(strata)
    out = np.asarray(fixed, dtype=np.int64).copy() if n else np.zeros(0, dtype=np.int64)
    free = [i for i in range(n) if out[i] < 0]
    if not free:
        return out.astype(np.uint8)
    members: dict[str, list[int]] = defaultdict(list)
    for i in free:
        members[groups[i] if groups[i] is not None else f"\0image{i}"].append(i)
    # A group's stratum is its most common class; ties go to the smaller class index.
    by_class: dict[int, list[str]] = defaultdict(list)
    for key in sorted(members, key=lambda k: members[k][0]):
        counts = Counter(int(strata[i]) for i in members[key])
        by_class[min(counts, key=lambda c: (-counts[c], c))].append(key)
    rng = np.random.default_rng(seed)
    for cls in sorted(by_class):
        keys = by_class[cls]
        order = rng.permutation(len(keys))
        total = sum(len(members[k]) for k in keys)
        targets = [fractions[2] * total, fractions[1] * total]
        filled = [0, 0]
        for j in order:
            key = keys[j]
            size = len(members[key])
            split = 0
            for s, target in ((2, targets[0]), (1, targets[1])):
                slot = 0 if s == 2 else 1
                if filled[slot] + size / 2 <= target:
                    filled[slot] += size
                    split = s
                    break
            for i in members[key]:
                out[i] = split
    return out.astype(np.uint8)


# File names that carry a patient id: Kermany's ``person123_bacteria_456.jpeg`` / ``IM-0115-0001.jpeg``, NIH's
# ``00012345_001.png``. Images of one patient in two splits inflate every downstream figure.
PATIENT_NAME_PATTERNS = (r"person\d+_", r"(?:^|/)\d{8}_\d{3}\.", r"(?:^|/)(?:NORMAL2-)?IM-\d{4}-\d{4}")


def names_look_patient_keyed(origins: Sequence[str], min_share: float = 0.5) -> str | None:
    """The pattern that at least ``min_share`` of the file names match, if any (only the pattern is returned,
    never a name)."""
    import re

    if not origins:
        return None
    for pat in PATIENT_NAME_PATTERNS:
        rx = re.compile(pat)
        if sum(1 for o in origins if rx.search(o)) >= min_share * len(origins):
            return pat
    return None


def leaky_groups(items: Iterable[dict]) -> int:
    """Number of patient groups whose images lie in more than one split (0 when the data has no groups), from a
    dataset's per-image records (:meth:`PreparedDataset.items`)."""
    seen: dict[int, set[int]] = {}
    for item in items:
        if "group" in item:
            seen.setdefault(int(item["group"]), set()).add(int(item.get("split", 0)))
    return sum(1 for s in seen.values() if len(s) > 1)
