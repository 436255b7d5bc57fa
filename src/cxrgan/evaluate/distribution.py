"""Distribution metrics between a real and a synthetic feature set ``(N, D)`` and ``(M, D)``.

- Fréchet distance (Heusel et al. 2017): distance between Gaussians fitted to the two sets.
- Kernel distance, KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, mean and
  standard deviation over random subsets; unbiased, so it is near 0 for two samples of one distribution.
- Vendi score (Friedman & Dieng 2023): the effective number of distinct samples of one set, scale-free.
- Precision, recall, density and coverage (Naeem et al. 2020): k-nearest-neighbour balls around real (and,
  for recall, synthetic) features. Precision and density measure fidelity, recall and coverage diversity.

All pairwise work is batched on torch in float64, in row blocks so 10,000 x 10,000 sets fit in memory.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 2048


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` ``(N, D)``."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt, 0.0))


def mean_pairwise_distance(f: np.ndarray) -> float:
    """Mean Euclidean distance between all pairs of rows: a diversity figure (0 for a collapsed set)."""
    t = torch.as_tensor(np.asarray(f), dtype=torch.float64)
    n = len(t)
    if n < 2:
        return 0.0
    total = sum(float(torch.cdist(t[i : i + BLOCK], t).sum()) for i in range(0, n, BLOCK))
    return total / (n * (n - 1))


def vendi_score(f: np.ndarray) -> float:
    """Effective number of distinct rows (Friedman & Dieng's Vendi score): the exponential of the entropy of the
    eigenvalues of the cosine-similarity matrix of the centred features, between 1 (all rows alike) and N.

    Centring and the cosine make it blind to the scale and position of the set: it counts how many different
    directions the rows spread in, not how far. So it sees what the mean pairwise distance barely sees, a set
    made of a few repeated images (4 real radiographs repeated 32 times keep 0.67-0.86 of the mean pairwise
    distance of 128 distinct ones and 0.23-0.25 of their Vendi score, in the trained classifier space;
    ``benchmarks/diversity_measures.py``), and it does not mistake a uniformly blurred but varied set for a
    collapsed one."""
    t = torch.as_tensor(np.asarray(f), dtype=torch.float64)
    if len(t) < 2:
        return float(len(t))
    t = t - t.mean(0)
    norms = t.norm(dim=1, keepdim=True)
    t = torch.where(norms > 1e-12, t / norms.clamp_min(1e-12), torch.zeros_like(t))
    gram = t.T @ t if t.shape[1] < len(t) else t @ t.T  # same non-zero eigenvalues; the smaller matrix is cheaper
    lam = torch.linalg.eigvalsh(gram / len(t)).clamp_min(0)
    lam = lam / lam.sum() if float(lam.sum()) > 0 else lam
    lam = lam[lam > 1e-12]
    return float(torch.exp(-(lam * lam.log()).sum())) if len(lam) else 1.0


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel distance ``(mean, std)`` over ``subsets`` random subsets of ``min(subset_size, N, M)`` rows."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    m = min(subset_size, len(r), len(f))
    if m < 2:
        raise ValueError("KID needs at least two samples in each set")
    d = r.shape[1]
    g = torch.Generator().manual_seed(seed)
    kernel = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    vals = []
    for _ in range(subsets):
        x = r[torch.randperm(len(r), generator=g)[:m]]
        y = f[torch.randperm(len(f), generator=g)[:m]]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        off = m * (m - 1)
        mmd = (kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off - 2 * kxy.mean()
        vals.append(float(mmd))
    a = np.asarray(vals)
    return float(a.mean()), float(a.std())


def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    out = torch.empty(len(x), dtype=x.dtype)
    for i in range(0, len(x), BLOCK):
        d = torch.cdist(x[i : i + BLOCK], x)
        out[i : i + BLOCK] = d.topk(k + 1, dim=1, largest=False).values[:, k]  # index 0 is the row itself
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` with ``k`` nearest neighbours."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} samples in each set")
    r_rad, f_rad = _kth_neighbour_radii(r, k), _kth_neighbour_radii(f, k)
    in_real_ball = torch.zeros(len(f), dtype=torch.bool)  # fake j inside some real ball (precision)
    density_count = torch.zeros(len(f), dtype=torch.float64)
    nearest_fake = torch.empty(len(r), dtype=torch.float64)
    real_recalled = torch.empty(len(r), dtype=torch.bool)  # real i inside some fake ball (recall)
    for i in range(0, len(r), BLOCK):
        d = torch.cdist(r[i : i + BLOCK], f)  # (b, M)
        inside = d < r_rad[i : i + BLOCK, None]
        in_real_ball |= inside.any(0)
        density_count += inside.sum(0)
        nearest_fake[i : i + BLOCK] = d.min(1).values
        real_recalled[i : i + BLOCK] = (d < f_rad[None, :]).any(1)
    return {
        "precision": float(in_real_ball.double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(density_count.sum() / (k * len(f))),
        "coverage": float((nearest_fake < r_rad).double().mean()),
    }


def compare(a: np.ndarray, b: np.ndarray, kid_subsets: int = 50) -> dict[str, float]:
    """Every distribution figure of ``b`` against ``a``: sizes, FD, KID mean and std, and PRDC (k = 5, or fewer
    for tiny sets)."""
    k_mean, k_std = kid(a, b, subsets=kid_subsets, subset_size=1000)
    return {"n_a": len(a), "n_b": len(b), "fd": frechet_distance(a, b), "kid": k_mean, "kid_std": k_std,
            **prdc(a, b, k=min(5, len(a) - 1, len(b) - 1))}


def nearest_distances(query: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the Euclidean distance to its nearest reference row and that row's index.

    ``exclude_self``: query and reference are the same set; a row's match with itself is skipped.
    """
    q = torch.as_tensor(np.asarray(query), dtype=torch.float64)
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    dist = np.empty(len(q))
    idx = np.empty(len(q), dtype=np.int64)
    for i in range(0, len(q), BLOCK):
        d = torch.cdist(q[i : i + BLOCK], ref)
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + i] = float("inf")
        v, j = d.min(1)
        dist[i : i + BLOCK], idx[i : i + BLOCK] = v.numpy(), j.numpy()
    return dist, idx
