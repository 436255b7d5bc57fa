"""Benchmark: ``prepare`` against a naive single-process Pillow loop, measured in the same run.

Writes N (default 2,000) synthetic 1024x1024 16-bit PNG radiographs (cached under --cache), then prepares
them to 128 px twice: with a plain loop (open, to float, Lanczos resize, quantize; one process) and with
``cxrgan.prepare`` (parallel workers, box pre-reduction, streaming memmap output). Prints images/s, the
speed-up, and peak memory of each; then peak memory of ``prepare`` on a quarter of the files, to show that
memory does not grow with the number of images. Target: >= 1.8x on 2 cores.

    python benchmarks/bench_prepare.py [--n 2000] [--cache /tmp/cxrgan-bench-png16]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402


def _write_one(args: tuple[Path, int]) -> None:
    path, i = args
    if path.exists():
        return
    from cxrgan.data.phantom import render

    img, _ = render(i, i % 3, size=256, seed=11)
    big = np.asarray(Image.fromarray(img, mode="F").resize((1024, 1024), Image.BICUBIC))
    rng = np.random.default_rng(i)
    u16 = np.clip((big * 3500 + 300 + rng.normal(0, 20, big.shape)), 0, 4095).astype(np.uint16)
    tmp = path.with_suffix(".tmp")
    Image.fromarray(u16).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def make_inputs(root: Path, n: int) -> list[Path]:
    paths = [root / ("NORMAL", "PNEUMONIA")[i % 2] / f"img{i:05d}.png" for i in range(n)]
    for p in {p.parent for p in paths}:
        p.mkdir(parents=True, exist_ok=True)
    todo = [(p, i) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        print(f"writing {len(todo)} 1024x1024 16-bit PNGs to {root} (once) ...", flush=True)
        with mp.Pool(os.cpu_count()) as pool:
            pool.map(_write_one, todo, chunksize=8)
    return paths


def naive(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        arr = np.asarray(Image.open(p), dtype=np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
        small = np.asarray(Image.fromarray(arr, mode="F").resize((size, size), Image.LANCZOS))
        out[i] = np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)
    return out


def _difference(dataset: Path, root: Path, paths: list[Path], ref: np.ndarray) -> tuple[float, int]:
    """Mean and max absolute grey-level difference, matching images by their origin in the manifest."""
    from cxrgan.data import PreparedDataset

    order = {p.relative_to(root).as_posix(): i for i, p in enumerate(paths)}
    items = list(PreparedDataset.open(dataset).items())
    ours = np.load(dataset / "images.npy")
    idx = np.asarray([order[it["origin"]] for it in items])
    diff = np.abs(ours.astype(np.int16) - ref[idx].astype(np.int16))
    return float(diff.mean()), int(diff.max())


def in_child(code: str) -> tuple[float, float]:
    """Run ``code`` in a fresh Python process; (seconds, peak MiB of its process tree)."""
    with PeakMemory() as mem:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        elapsed = time.perf_counter() - t
    return elapsed, mem.extra_mib


def run_prepare(root: Path, out: Path, size: int) -> tuple[float, float]:
    return in_child(f"from cxrgan.data import Preprocess, prepare; "
                    f"prepare({str(root)!r}, {str(out)!r}, Preprocess(size={size}), progress=False)")


def run_naive(paths_file: Path, out: Path, size: int) -> tuple[float, float]:
    here = str(Path(__file__).parent)
    return in_child(f"import sys, numpy as np; sys.path.insert(0, {here!r}); from bench_prepare import naive; "
                    f"from pathlib import Path; paths = [Path(p) for p in open({str(paths_file)!r}).read().split()]; "
                    f"np.save({str(out)!r}, naive(paths, {size}))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "cxrgan-bench-png16"))
    a = ap.parse_args()
    root = Path(a.cache) / "all"
    paths = make_inputs(root, a.n)
    work = Path(tempfile.mkdtemp(prefix="cxrgan-bench-"))
    try:
        (work / "paths.txt").write_text("\n".join(str(p) for p in paths))
        t_ref, m_ref = run_naive(work / "paths.txt", work / "naive.npy", a.size)
        ref = np.load(work / "naive.npy")
        t_ours, m_ours = run_prepare(root, work / "full", a.size)
        # Same pixels as the reference (within rounding): the speed is not bought with quality.
        mean_diff, max_diff = _difference(work / "full", root, paths, ref)
        del ref
        quarter = Path(a.cache) / "quarter"
        if not quarter.exists():
            for p in paths[: a.n // 4]:
                (quarter / p.parent.name).mkdir(parents=True, exist_ok=True)
                os.link(p, quarter / p.parent.name / p.name)
        _, m_q = run_prepare(quarter, work / "quarter", a.size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nprepare benchmark: {a.n} x 1024x1024 16-bit PNG -> {a.size} px, {os.cpu_count()} cores")
    print(f"{'method (each in a fresh process)':<34}{'images/s':>10}{'peak MiB':>10}  (peak RSS of its process tree)")
    print(f"{'naive single-process Pillow loop':<34}{a.n / t_ref:>10.1f}{m_ref:>10.0f}")
    print(f"{'cxrgan prepare':<34}{a.n / t_ours:>10.1f}{m_ours:>10.0f}")
    print(f"speed-up: {t_ref / t_ours:.2f}x (target >= 1.8x)")
    print(f"pixel difference to the naive loop: mean {mean_diff:.3f}, max {max_diff} grey levels")
    print(f"prepare peak memory: {m_q:.0f} MiB for {a.n // 4} images, {m_ours:.0f} MiB for {a.n} "
          f"(ratio {m_ours / max(m_q, 1):.2f}; 1.0 = independent of N)")


if __name__ == "__main__":
    main()
