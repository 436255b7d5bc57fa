"""Where a training step's time goes on a GPU, counted on any device: operators and host reads per step.

Small networks on a GPU are bound by kernel launches and by host reads (``.item()``, ``float(t)``, ``bool(t)``...,
each one a wait for every queued kernel), not by arithmetic. Both are properties of the code, not of the device,
so they are counted here on whatever device runs this (``cxrgan.bench.profile_steps``): for each family at its
defaults, the operators that compute per plain training step (about the kernel launches on a GPU), the view
operators (no launch), the host reads per plain step and per logging step, and where any plain-step read comes
from; beside the plain eager DCGAN loop of ``cxrgan bench`` (the reference) counted the same way. On a GPU run
the same script also gives the wall time per step, so launches per millisecond can be read off.

    python benchmarks/step_profile.py --batch 64,512 --out docs/results/step_profile.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cxrgan.bench import FAMILIES, machine_line, profile_steps, reference_loop
from cxrgan.data import Preprocess, SourceOptions, prepare
from cxrgan.runtime.execution import pick_device
from cxrgan.runtime.syncs import HostReads, OpCount


def reference_counts(images: torch.Tensor, batch: int, device: torch.device, iters: int = 4) -> tuple[float, float, float]:
    """Operators, views and host reads per step of the reference loop (its warm-up steps included: it has no
    per-step setup)."""
    with HostReads() as reads, OpCount() as ops:
        reference_loop(images, batch, iters, device, warmup=0)
    return ops.total / iters, sum(ops.views.values()) / iters, len(reads.reads) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--batch", default="64", help="batch sizes, comma-separated")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", help="write the table as Markdown here too")
    a = ap.parse_args()
    dev = pick_device(a.device)
    work = Path(tempfile.mkdtemp(prefix="cxrgan-profile-"))
    batches = [int(b) for b in a.batch.split(",")]
    ds = prepare("phantom", work / "data", Preprocess(size=a.size), SourceOptions(count=max(512, 2 * max(batches))), progress=False)
    images = torch.from_numpy(np.array(ds.images[: 2 * max(batches)])).unsqueeze(1).float() / 127.5 - 1
    lines = [f"machine: {machine_line(dev)}", "",
             "| batch | variant | operators per step (launches) | views per step | host reads per plain step | "
             "host reads per logging step | where plain-step reads come from |", "|---|---|---|---|---|---|---|"]
    print(lines[0])
    for batch in batches:
        ops, views, reads = reference_counts(images, batch, dev)
        lines.append(f"| {batch} | reference (plain eager DCGAN loop) | {ops:.0f} | {views:.0f} | {reads:.0f} | - | - |")
        print(lines[-1], flush=True)
        for fam in a.families.split(","):
            p = profile_steps(fam, ds.root, work, batch=batch, steps=a.steps, device=str(dev))
            sites = "; ".join(f"{k} ({v:g})" for k, v in list(p.read_sites.items())[:4]) or "-"
            lines.append(f"| {batch} | {fam} | {p.ops_per_step:.0f} | {p.views_per_step:.0f} | {p.reads_per_step:g} | "
                         f"{p.reads_per_log_step:g} | {sites} |")
            print(lines[-1], flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
