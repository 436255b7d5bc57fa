"""Quality study on real radiographs: train every family on ``cxr_real_64.npz`` and compare them.

Prepares ``../shared/data/cxr_real_64.npz`` (NORMAL/PNEUMONIA, 64 px), trains ``gan``, ``dcgan``, ``cgan`` and
``bigan`` with the same budget, and writes the comparative study (combined loss and D-accuracy curves, one
sample row per model and class, summary table with FD in the fixed feature space) to ``--out``. Also
prints the FD between the real train and test splits, the floor a generator can approach.

    python benchmarks/quality_real.py [--steps 800] [--out results/real64] [--families gan,dcgan,cgan,bigan]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "cxr_real_64.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--families", default="gan,dcgan,cgan,bigan")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--out", default="results/real64")
    a = ap.parse_args()
    from cxrgan.data import PreparedDataset, Preprocess, prepare
    from cxrgan.evaluate.distribution import frechet_distance
    from cxrgan.evaluate.features import RandomConvFeatures
    from cxrgan.report.compare import compare
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.config import load_config
    from cxrgan.train.data import to_model_range
    from cxrgan.train.loop import train

    out = Path(a.out)
    ds_path = out / "data"
    ds = PreparedDataset.open(ds_path) if (ds_path / "manifest.json").is_file() else prepare(a.data, ds_path, Preprocess(size=64))
    feats = RandomConvFeatures()
    emb = feats.embed(to_model_range(torch.from_numpy(np.array(ds.images))))
    print(f"real train vs real test FD (the floor): {frechet_distance(emb[ds.indices('test')], emb[ds.indices('train')]):.4f}")
    runs = []
    for fam in a.families.split(","):
        run = out / "runs" / fam
        runs.append(run)
        done = ckpt.list_checkpoints(run)
        if done and done[-1] >= a.steps:
            continue
        cfg = load_config(None, [f"model.family={fam}", f"data.path={ds_path}", f"steps={a.steps}", f"batch_size={a.batch}",
                                 f"model.g_channels={a.channels}", f"model.d_channels={a.channels}", "ckpt_every=200",
                                 "log_every=20", "eval_samples=1024", "grid_every=200"])
        t = time.perf_counter()
        res = train(cfg, run, resume=bool(done), progress=False)
        if res.interrupted:
            raise SystemExit(f"interrupted; run this script again to resume {run}")
        print(f"{fam}: {res.step} steps in {time.perf_counter() - t:.0f} s, best FD {res.best_fd:.4f} at step {res.best_step}")
    compare(runs, out / "compare")
    print((out / "compare" / "summary.md").read_text())


if __name__ == "__main__":
    main()
