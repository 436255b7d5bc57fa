"""Memorization audit (a planted copy is always flagged) and the centroid study's box-plot data."""

from __future__ import annotations

import numpy as np

from cxrgan.evaluate.centroids import centroid_study
from cxrgan.evaluate.memorization import memorization_audit
from cxrgan.report.evalplots import centroid_boxplots, closest_pairs


def _images(n, seed, size=16):
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 200, size)[None, :, None] * np.ones((1, 1, size))
    return np.clip(base + rng.normal(0, 25, (n, size, size)), 0, 255).astype(np.uint8)


def test_planted_copy_is_flagged_every_time(tmp_path):
    for seed in range(5):
        train, heldout, synth = _images(200, seed), _images(400, seed + 100), _images(50, seed + 200)
        planted = int(np.random.default_rng(seed).integers(0, 200))
        synth[7] = train[planted]
        audit = memorization_audit(synth, train, heldout)
        px = audit.spaces[0]
        assert px.flagged[7] and px.nearest[7] == planted
        assert px.flagged.sum() <= 4  # fresh images are flagged about as often as held-out ones (1%), not more
        assert audit.closest(1)[0][:2] == (7, planted)
    closest_pairs(synth, train, audit.closest(4), tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 100


def test_centroid_study_shapes_and_own_class_nearest(tmp_path):
    rng = np.random.default_rng(0)
    real = {"A": rng.normal(0, 1, (300, 5)), "B": rng.normal(3, 1, (300, 5))}
    synth = {"A": rng.normal(0.1, 1, (200, 5)), "B": rng.normal(2.9, 1, (200, 5))}
    st = centroid_study(synth, real, n=50, draws=40)
    assert set(st.distances) == {"A", "B"} and all(d.shape == (40,) for per in st.distances.values() for d in per.values())
    assert all(d.shape == (40,) for per in st.reference.values() for d in per.values())
    assert st.nearest_is_own_class() == {"A": True, "B": True}
    assert len(st.rows()) == 8
    centroid_boxplots(st, tmp_path / "c.png", "test-space")
    assert (tmp_path / "c.png").stat().st_size > 1000
