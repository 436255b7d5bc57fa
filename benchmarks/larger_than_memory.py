"""Benchmark: prepare and train on datasets far larger than what the processes hold in memory.

Writes N (default 100,000) generated 64 px radiograph-like PNGs in two class folders, and a tenth of them as a
second folder; prepares each with ``cxrgan prepare`` and trains a DCGAN on each for the same number of steps
with the training images read from disk (``data.in_memory=never``; ``auto`` does this beyond 4 GiB), every
command in its own process. Prints the dataset size and the peak resident memory of each command (the whole
process tree, workers included, sampled from /proc), and the ratio between the large and the small dataset:
memory should stay far below the dataset size and flat when the dataset grows 10x.

    python benchmarks/larger_than_memory.py [--n 100000] [--size 64] [--steps 200] [--work /tmp/cxrgan-ltm]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402


def _write_chunk(args: tuple[Path, int, int, int]) -> None:
    """Images ``start..stop``: a soft chest-like silhouette with class-dependent blotches, and noise."""
    folder, start, stop, size = args
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    for i in range(start, stop):
        cls = "PNEUMONIA" if i % 3 == 0 else "NORMAL"
        path = folder / cls / f"img{i:06d}.png"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        body = np.exp(-((xx / rng.uniform(0.6, 0.8)) ** 4 + (yy / rng.uniform(0.7, 0.9)) ** 4))
        lungs = sum(np.exp(-(((xx - s * 0.35) / 0.22) ** 2 + (yy / 0.45) ** 2)) for s in (-1, 1))
        img = 0.8 * body - 0.5 * lungs
        if cls == "PNEUMONIA":
            cx, cy = rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4)
            img += 0.4 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02))
        img += rng.normal(0, 0.03, img.shape)
        Image.fromarray(np.clip(img * 200 + 40, 0, 255).astype(np.uint8)).save(path)


def write_folder(folder: Path, n: int, size: int) -> None:
    for cls in ("NORMAL", "PNEUMONIA"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
    chunks = [(folder, s, min(n, s + 2000), size) for s in range(0, n, 2000)]
    with mp.Pool(os.cpu_count() or 2) as pool:
        pool.map(_write_chunk, chunks)


def measured(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak MiB) of a command run to completion: the peak of the process tree above this benchmark's
    own resident memory, that is the command's processes (workers included)."""
    t = time.perf_counter()
    with PeakMemory() as mem:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t, mem.extra_mib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--work", default="/tmp/cxrgan-ltm")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders and datasets")
    a = ap.parse_args()
    import torch

    from cxrgan.runtime.execution import native_bf16

    work = Path(a.work)
    base_s, base_mib = measured([sys.executable, "-c", "import cxrgan.train.loop, cxrgan.data.prepare"])
    cxrgan = [sys.executable, "-m", "cxrgan", "--quiet"]
    print(f"larger-than-memory benchmark: {os.cpu_count()} cores, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 {'native' if native_bf16(torch.device('cpu')) else 'emulated'}; {a.size} px. A process that only imports "
          f"cxrgan and torch peaks at {base_mib:.0f} MiB")
    results = {}
    try:
        for n in (a.n // 10, a.n):
            folder, ds, run = work / f"png{n}-{a.size}", work / f"ds{n}", work / f"run{n}"
            t = time.perf_counter()
            write_folder(folder, n, a.size)
            print(f"{n} PNGs written in {time.perf_counter() - t:.0f} s", flush=True)
            shutil.rmtree(ds, ignore_errors=True)
            shutil.rmtree(run, ignore_errors=True)
            prep_s, prep_mib = measured([*cxrgan, "prepare", str(folder), "--size", str(a.size), "--out", str(ds)])
            size_mib = (ds / "images.npy").stat().st_size / 2**20
            train_s, train_mib = measured([*cxrgan, "train", "--model", "dcgan", "--data", str(ds), "--out", str(run),
                                           "--steps", str(a.steps), "--batch-size", "64", "--set", "data.in_memory=never",
                                           "--set", f"ckpt_every={a.steps}", "--set", "eval_samples=256"])
            results[n] = (size_mib, prep_mib, train_mib)
            print(f"{n:>7} images: images.npy {size_mib:7.0f} MiB | prepare {prep_s:5.0f} s, peak {prep_mib:5.0f} MiB | "
                  f"train {a.steps} steps {train_s:5.0f} s, peak {train_mib:5.0f} MiB", flush=True)
        small, large = results[a.n // 10], results[a.n]
        print(f"10x the images: dataset {large[0] / small[0]:.1f}x, peak memory of prepare {large[1] / small[1]:.2f}x, "
              f"of training {large[2] / small[2]:.2f}x; at {a.n} images prepare peaks at {large[1] / large[0]:.2f} and "
              f"training at {large[2] / large[0]:.2f} of the dataset size; above the import-only process, "
              f"prepare {large[1] - base_mib:.0f} MiB and training {large[2] - base_mib:.0f} MiB")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
