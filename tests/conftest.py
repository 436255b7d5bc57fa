"""Shared fixtures. Real data in ../shared/data is used when present; tests that need it skip otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_NPZ = SHARED_DATA / "cxr_real_64.npz"
KERMANY = SHARED_DATA / "kermany_sample"


def pytest_configure(config) -> None:
    """Under pytest-xdist, give each worker its share of the cores: two workers with torch's default of one
    thread per core oversubscribe the machine, and OpenMP's waiting threads then make training steps several
    times slower (a 20 s test took 180 s beside a second worker on 2 cores)."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for the CLI subprocesses some tests start


@pytest.fixture(scope="session")
def phantom32(tmp_path_factory) -> Path:
    """A small prepared phantom dataset at 32 px, shared by the tests of a session (read-only)."""
    from cxrgan.data import Preprocess, SourceOptions, prepare

    out = tmp_path_factory.mktemp("phantom") / "ds"
    prepare("phantom", out, Preprocess(size=32), SourceOptions(count=600, seed=0), progress=False, workers=1)
    return out


def radiograph(h: int = 80, w: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth float image in [0, 1] with structure (for fixtures)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.5 + 0.3 * np.sin(6 * x + seed) * np.cos(4 * y) + 0.05 * rng.standard_normal((h, w))
    return np.clip(img, 0, 1)


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory):
    """Trained feature spaces are cached under $CXRGAN_CACHE: keep the tests' own cache out of the home folder."""
    import os

    old = os.environ.get("CXRGAN_CACHE")
    os.environ["CXRGAN_CACHE"] = str(tmp_path_factory.mktemp("cxrgan-cache"))
    yield
    if old is None:
        os.environ.pop("CXRGAN_CACHE", None)
    else:
        os.environ["CXRGAN_CACHE"] = old
