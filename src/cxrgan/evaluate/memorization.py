"""Memorization audit: does a generator hand back (near-)copies of its training images?

Each synthetic image's nearest training image is found in pixel space and in a feature space. The scale is
the same distance for real held-out images (the validation split, never trained on) to the training split:
a synthetic image closer to a training image than the 1st percentile of that reference is flagged. A
generator that copies has many flagged images; an honest one about 1 percent, as a new real image would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .distribution import nearest_distances

PERCENTILE = 1.0


@dataclass
class SpaceAudit:
    """One space's audit: per synthetic image its nearest training index and distance; the reference."""

    space: str
    distances: np.ndarray
    nearest: np.ndarray
    reference: np.ndarray
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        return self.distances <= self.threshold

    def summary(self) -> dict[str, float | str]:
        return {"space": self.space, "threshold_p1": self.threshold, "flagged_fraction": float(self.flagged.mean()),
                "flagged": int(self.flagged.sum()), "synthetic": int(len(self.distances)),
                "reference_fraction": float((self.reference <= self.threshold).mean()),
                "median_synthetic": float(np.median(self.distances)), "median_reference": float(np.median(self.reference))}


@dataclass
class MemorizationAudit:
    spaces: list[SpaceAudit] = field(default_factory=list)

    def closest(self, k: int = 8) -> list[tuple[int, int, float]]:
        """The ``k`` closest (synthetic index, training index, pixel distance) pairs, closest first."""
        px = self.spaces[0]
        order = np.argsort(px.distances)[:k]
        return [(int(i), int(px.nearest[i]), float(px.distances[i])) for i in order]


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> ``(N, S*S)`` float32 in [0, 1]."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def audit_space(name: str, synth: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> SpaceAudit:
    """Nearest training neighbours of ``synth`` and of ``heldout`` (vectors ``(N, D)``) in one space."""
    d, idx = nearest_distances(synth, train)
    ref, _ = nearest_distances(heldout, train)
    return SpaceAudit(name, d, idx, ref, float(np.percentile(ref, PERCENTILE)))


def memorization_audit(synth_u8: np.ndarray, train_u8: np.ndarray, heldout_u8: np.ndarray,
                       features: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> MemorizationAudit:
    """Audit uint8 synthetic images against uint8 training images, in pixels and in each feature space.

    ``features``: space name -> ``(synthetic, training, held-out)`` feature arrays."""
    audit = MemorizationAudit([audit_space("pixels", pixel_vectors(synth_u8), pixel_vectors(train_u8), pixel_vectors(heldout_u8))])
    for name, (fs, ft, fh) in (features or {}).items():
        audit.spaces.append(audit_space(name, fs, ft, fh))
    return audit
