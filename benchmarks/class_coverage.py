"""Class coverage of unconditional generators over a run's checkpoints: which share of each class they draw.

The training-time diversity ratio of an unconditional family pools both classes, and in the trained classifier
space the distance between classes dominates the real figure. A generator that draws mostly one class then has
low pooled diversity even when each class it draws is varied. This script re-scores every kept checkpoint of
each run with the run's own quality monitor (same feature space, latents and real images, so FD and diversity
match the run's metrics.csv) and adds what the monitor now logs for unconditional runs: the share of samples
the space's classifier puts in each class against real images, and the within-class diversity of the samples
grouped by that predicted class.

    python benchmarks/class_coverage.py RUN [RUN ...] [--csv OUT.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--csv", help="write every row here as well")
    ap.add_argument("--every", type=int, default=1, help="score every k-th kept checkpoint")
    a = ap.parse_args()

    from cxrgan.evaluate.distribution import mean_pairwise_distance
    from cxrgan.sample import load_run
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.quality import run_monitor
    from cxrgan.utils.tensors import to_model_range

    torch.set_num_threads(1)
    rows = []
    for run in map(Path, a.runs):
        first = load_run(run, "last")
        if first.family.conditional:
            print(f"{run}: conditional; its diversity is already measured within each class", file=sys.stderr)
            continue
        data, mon = run_monitor(first)
        space = mon.space
        if mon.real_share is None:
            print(f"{run}: its quality space has no class head, or one class only; nothing to score", file=sys.stderr)
            continue
        names = mon.class_names
        real = to_model_range(torch.from_numpy(data.uint8(np.arange(min(len(data), 1024)))))
        real_pred, real_feats = space.classify(real), space.embed(real)
        real_within = {c: mean_pairwise_distance(real_feats[real_pred == c][:128]) for c in range(len(names))}
        for step in ckpt.list_checkpoints(run)[:: a.every]:
            loaded = load_run(run, step)

            def generate(z, y, fam=loaded.family):
                with torch.no_grad():
                    return fam.generate(z, y).float()

            figures = mon.evaluate(generate)
            fakes = torch.cat([generate(mon.z[i : i + 64], mon.y[i : i + 64]) for i in range(0, len(mon.z), 64)])
            pred, feats = space.classify(fakes), space.embed(fakes)
            share = np.bincount(pred, minlength=len(names)) / len(pred)
            row = {"run": run.name, "step": step, "fd": round(figures["fd"], 3), "diversity_ratio": round(figures["diversity_ratio"], 3),
                   "class_coverage": round(figures["class_coverage"], 3)}
            for c, n in enumerate(names):
                row[f"share_{n}"] = round(float(share[c]), 3)
                row[f"real_share_{n}"] = round(float(mon.real_share[c]), 3)
                within = mean_pairwise_distance(feats[pred == c][:128]) if (pred == c).sum() >= 2 else float("nan")
                row[f"within_ratio_{n}"] = round(within / real_within[c], 3)
            rows.append(row)
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if a.csv and rows:
        with open(a.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
