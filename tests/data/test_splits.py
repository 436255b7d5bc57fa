import numpy as np
import pytest

from cxrgan.data.splits import assign_splits, parse_fractions
from cxrgan.errors import CxrganError


def test_stratified_fractions_per_class():
    strata = [0] * 700 + [1] * 300
    s = assign_splits(strata, [None] * 1000, [-1] * 1000, (0.7, 0.15, 0.15), seed=1)
    for c, n in ((0, 700), (1, 300)):
        counts = np.bincount(s[np.asarray(strata) == c], minlength=3)
        assert abs(counts[1] - 0.15 * n) <= 1 and abs(counts[2] - 0.15 * n) <= 1


def test_patient_groups_never_cross_splits_and_seed_is_deterministic():
    rng = np.random.default_rng(0)
    groups = [f"p{rng.integers(0, 80)}" for _ in range(500)]
    strata = [int(g[1:]) % 2 for g in groups]
    a = assign_splits(strata, groups, [-1] * 500, seed=3)
    b = assign_splits(strata, groups, [-1] * 500, seed=3)
    c = assign_splits(strata, groups, [-1] * 500, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    by_group = {}
    for g, s in zip(groups, a):
        by_group.setdefault(g, set()).add(int(s))
    assert all(len(v) == 1 for v in by_group.values())
    assert set(a.tolist()) == {0, 1, 2}


def test_fixed_splits_are_kept():
    s = assign_splits([0, 1, 0, 1], [None] * 4, [2, 1, 0, -1], seed=0)
    assert s[:3].tolist() == [2, 1, 0]


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "0.5,0.6,0.1", "a,b,c", "0,0.5,0.5"):
        with pytest.raises(CxrganError):
            parse_fractions(bad)
