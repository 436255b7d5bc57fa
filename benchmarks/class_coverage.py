"""Class coverage of unconditional generators over a run's checkpoints: which share of each class they draw, how
varied each class is, and how far apart the classes sit.

The training-time diversity ratio of an unconditional family pools both classes, and in the trained classifier
space the distance between classes dominates the real figure. A generator that draws mostly one class, or whose
classes sit closer together than real ones (in-between images), then has low pooled diversity even when the
samples of each class vary as much as real ones. This script re-scores every kept checkpoint of each run with the
run's own quality monitor (same feature space, latents and real images, so FD and diversity match the run's
metrics.csv) and prints its class breakdown (``QualityMonitor.class_breakdown``): per class the share of the
samples against real images and the within-class diversity ratio of the samples the classifier puts in it, and
the separation of the class centroids against real's, with each class's drift: how far its samples' centroid has
moved from the real class's towards the other class (0.5: halfway), which says which class the lost separation
belongs to.

    python benchmarks/class_coverage.py RUN [RUN ...] [--csv OUT.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--csv", help="write every row here as well")
    ap.add_argument("--every", type=int, default=1, help="score every k-th kept checkpoint")
    a = ap.parse_args()

    from cxrgan.sample import load_run
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.sample import run_monitor

    torch.set_num_threads(1)
    rows = []
    for run in map(Path, a.runs):
        first = load_run(run, "last")
        if first.family.conditional:
            print(f"{run}: conditional; its diversity is already measured within each class", file=sys.stderr)
            continue
        _, mon = run_monitor(first)
        if mon.real_share is None:
            print(f"{run}: its quality space has no class head, or one class only; nothing to score", file=sys.stderr)
            continue
        for step in ckpt.list_checkpoints(run)[:: a.every]:
            family = load_run(run, step).family
            with torch.no_grad():
                fakes = torch.cat([family.generate(mon.z[i : i + 64], mon.y[i : i + 64]).float() for i in range(0, len(mon.z), 64)])
            figures, parts = mon.score_parts(fakes)
            row = {"run": run.name, "step": step, "fd": round(figures["fd"], 3), "diversity_ratio": round(figures["diversity_ratio"], 3),
                   "class_coverage": round(figures["class_coverage"], 3), "class_separation": round(parts["separation"], 3)}
            for name, share in parts["share"].items():
                row[f"share_{name}"] = round(share, 3)
                row[f"real_share_{name}"] = round(float(mon.real_share[mon.class_names.index(name)]), 3)
                row[f"within_ratio_{name}"] = round(parts["within"][name], 3)
                row[f"drift_{name}"] = round(parts["drift"].get(name, float("nan")), 3)
            rows.append(row)
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if a.csv and rows:
        with open(a.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
