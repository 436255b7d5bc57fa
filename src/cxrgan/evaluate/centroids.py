"""The centroid study of Salehinejad et al.: are synthetic images of a class closest to real images of the
same class in the autoencoder's latent space?

For every synthetic class s and real class r, ``draws`` times: the centroid (mean latent) of N random
synthetic images of s and the centroid of N random real images of r, and their Euclidean distance. The
repeated random draws are why the study shows box plots rather than single distances. A real-versus-real
reference (centroids of two disjoint random draws of real images) gives the scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CentroidStudy:
    """``distances[s][r]``: ``(draws,)`` distances between synthetic class s and real class r centroids;
    ``reference[r][r2]``: the same between two disjoint draws of real classes r and r2."""

    synthetic_classes: list[str]
    real_classes: list[str]
    n: int
    draws: int
    distances: dict[str, dict[str, np.ndarray]]
    reference: dict[str, dict[str, np.ndarray]]

    def rows(self) -> list[dict[str, object]]:
        out = []
        for kind, table in (("synthetic", self.distances), ("real", self.reference)):
            for s, per in table.items():
                for r, d in per.items():
                    out.append({"set": kind, "class": s, "real_class": r, "n": self.n, "draws": self.draws,
                                "median": float(np.median(d)), "q1": float(np.percentile(d, 25)),
                                "q3": float(np.percentile(d, 75)), "mean": float(d.mean())})
        return out

    def nearest_is_own_class(self) -> dict[str, bool]:
        """For each synthetic class that is also a real class: is its median distance smallest to its own class?"""
        out = {}
        for s, per in self.distances.items():
            if s in per:
                out[s] = min(per, key=lambda r: np.median(per[r])) == s
        return out


def centroid_study(synth: dict[str, np.ndarray], real: dict[str, np.ndarray], n: int = 100, draws: int = 200,
                   seed: int = 0) -> CentroidStudy:
    """``synth``/``real``: class name -> latent features ``(N_c, D)``. ``n`` is capped by the smallest set."""
    rng = np.random.default_rng(seed)
    sizes = [len(v) for v in synth.values()] + [len(v) // 2 for v in real.values()]
    n = max(1, min([n] + sizes))

    def centroids(f: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        pool = np.arange(len(f)) if rows is None else rows
        idx = np.stack([rng.choice(pool, size=n, replace=False) for _ in range(draws)])
        return f[idx].mean(axis=1)  # (draws, D)

    real_c = {r: centroids(f) for r, f in real.items()}
    distances = {s: {r: np.linalg.norm(centroids(f) - real_c[r], axis=1) for r in real} for s, f in synth.items()}
    reference: dict[str, dict[str, np.ndarray]] = {}
    for r, f in real.items():  # disjoint halves: a real draw against another real draw
        perm = rng.permutation(len(f))
        half_a, half_b = perm[: len(f) // 2], perm[len(f) // 2 :]
        ca = centroids(f, half_a)
        reference[r] = {}
        for r2, f2 in real.items():
            cb = centroids(f2, half_b if r2 == r else None)
            reference[r][r2] = np.linalg.norm(ca - cb, axis=1)
    return CentroidStudy(list(synth), list(real), n, draws, distances, reference)
