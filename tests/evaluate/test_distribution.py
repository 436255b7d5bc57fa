"""Known answers for the distribution metrics, and cross-checks against independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.evaluate.distribution import frechet_distance, kid, mean_pairwise_distance, nearest_distances, prdc


def test_fd_identical_sets_is_zero_and_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(mu1, diag s1^2) vs N(mu2, diag s2^2): |mu1 - mu2|^2 + sum (s1 - s2)^2
    mu1, mu2, s1, s2 = np.zeros(8), np.full(8, 0.5), np.ones(8), np.full(8, 2.0)
    closed = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    x = rng.standard_normal((200_000, 8)) * s1 + mu1
    y = rng.standard_normal((200_000, 8)) * s2 + mu2
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02)


def test_fd_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
    b = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((1500, 10)), rng.standard_normal((1500, 10))
    same, same_std = kid(a, b, subsets=20, subset_size=500)
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.1 and shifted > 50 * abs(same)


def test_kid_matches_a_plain_loop_on_one_subset():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) + 0.2
    k = lambda x, y: (x @ y / 4 + 1) ** 3  # noqa: E731
    m = 30
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kid(a, b, subsets=3, subset_size=30)  # subsets of all rows: every draw is the whole set
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9) and std < 1e-9


def test_prdc_matches_reference_package():
    prdc_ref = pytest.importorskip("prdc")
    rng = np.random.default_rng(4)
    real = rng.standard_normal((300, 12))
    fake = rng.standard_normal((250, 12)) * 1.3 + 0.4
    ours = prdc(real, fake, k=5)
    ref = prdc_ref.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-9), key


def test_prdc_identical_sets_and_collapsed_set():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((400, 6))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == pytest.approx(1.0) and same["recall"] == pytest.approx(1.0) and same["coverage"] == pytest.approx(1.0)
    collapsed = np.repeat(real[:1], 100, axis=0) + 1e-6 * rng.standard_normal((100, 6))
    low = prdc(real, collapsed, k=5)
    assert low["recall"] < 0.05 and low["coverage"] < 0.05


def test_pairwise_and_nearest():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert mean_pairwise_distance(f) == pytest.approx((5 + 4 + 3) / 3)
    assert mean_pairwise_distance(np.zeros((10, 3))) == 0.0
    d, idx = nearest_distances(f, f, exclude_self=True)
    assert idx.tolist() == [2, 2, 1] and d.tolist() == [4.0, 3.0, 3.0]


def test_vendi_counts_distinct_rows_and_ignores_scale_and_position():
    from cxrgan.evaluate.distribution import vendi_score

    x = np.random.default_rng(0).normal(size=(128, 32))
    assert vendi_score(x) > 20
    assert vendi_score(3.0 * x + 7.0) == pytest.approx(vendi_score(x))
    four = x[np.arange(128) % 4]
    assert 2.0 < vendi_score(four) <= 3.0 + 1e-9  # centred: 4 distinct rows span 3 directions
    assert vendi_score(np.ones((10, 5))) == 1.0 and vendi_score(x[:1]) == 1.0
    tall = np.random.default_rng(1).normal(size=(300, 12))  # more rows than features: the features' Gram is used
    t = torch.as_tensor(tall - tall.mean(0))
    t = t / t.norm(dim=1, keepdim=True)
    lam = torch.linalg.eigvalsh(t @ t.T / len(t)).clamp_min(0)
    lam = lam[lam > 1e-12] / lam.sum()
    assert vendi_score(tall) == pytest.approx(float(torch.exp(-(lam * lam.log()).sum())), rel=1e-9)
