"""Which checkpoint-selection rule gives the most useful synthetic images? Measured by TSTR on real data.

Takes per-class runs (for example ``dcgan-NORMAL`` and ``dcgan-PNEUMONIA`` trained with ``--classes`` and
``--set keep_checkpoints=20`` so every checkpoint is kept) and, for every kept checkpoint, samples ``--n``
images and measures them in the validated classifier feature space: FD and diversity ratio against the real
training images of the class, recall and coverage, and class faithfulness (the share that the real-trained
classifier assigns to the intended class). Each rule picks one checkpoint per run; the picked pairs are judged
by TSTR (small CNN, several seeds, threshold on real validation, real test split).

    python benchmarks/selection_study.py --real DATA --runs RUN_A RUN_B --out docs/results/selection
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", required=True)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=12)
    a = ap.parse_args()

    from cxrgan.data import PreparedDataset
    from cxrgan.evaluate.classifier import ClassifierConfig
    from cxrgan.evaluate.distribution import frechet_distance, mean_pairwise_distance, prdc
    from cxrgan.evaluate.extractors import ensure_extractors
    from cxrgan.studies.usefulness import run_arm
    from cxrgan.report.tables import write_table
    from cxrgan.sample import generate, load_run
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.metrics import read_metrics
    from cxrgan.utils.io import write_json_atomic
    from cxrgan.utils.tensors import batches

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = PreparedDataset.open(a.real)
    space = ensure_extractors(ds, ["classifier"])["classifier"]
    clf_net = space.net
    labels = np.asarray(ds.labels)
    tr = ds.indices("train")
    seeds = [int(s) for s in a.seeds.split(",")]
    cfg = ClassifierConfig(epochs=a.epochs)
    val = (np.asarray(ds.images[ds.indices("val")]), labels[ds.indices("val")])
    test = (np.asarray(ds.images[ds.indices("test")]), labels[ds.indices("test")])

    per_run: dict[str, dict] = {}
    rows = []
    for run in map(Path, a.runs):
        first = load_run(run, "last")
        cls = first.trained_classes[0]
        c = ds.class_index(cls)
        real_c = np.asarray(ds.images[tr[labels[tr] == c]])
        f_real = space.embed_u8(real_c)
        div_real = mean_pairwise_distance(f_real[:128])
        randconv_fd = {int(r["step"]): float(r["fd"]) for r in read_metrics(run / "metrics.csv") if r.get("fd")}
        per_run[str(run)] = {"class": cls, "index": c, "steps": {}}
        for step in ckpt.list_checkpoints(run):
            lr = load_run(run, step)
            z = torch.randn(a.n, lr.cfg.model.z_dim, generator=torch.Generator().manual_seed(123))
            imgs = generate(lr, z, torch.zeros(a.n, dtype=torch.long))
            f = space.embed_u8(imgs)
            with torch.no_grad():
                logits = torch.cat([clf_net(x) for x in batches(imgs, 256)])
            faithful = float((logits.argmax(1) == c).float().mean())
            pr = prdc(f_real, f, k=5)
            row = {"run": run.name, "class": cls, "step": step, "fd_randconv": randconv_fd.get(step),
                   "fd_classifier": frechet_distance(f_real, f), "diversity_ratio": mean_pairwise_distance(f[:128]) / div_real,
                   "recall": pr["recall"], "coverage": pr["coverage"], "precision": pr["precision"], "faithfulness": faithful}
            rows.append(row)
            per_run[str(run)]["steps"][step] = (row, imgs)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    write_table(rows, list(rows[0]), out / "checkpoints")

    def pick(rule):
        chosen = {}
        for r, info in per_run.items():
            cand = [row for row, _ in info["steps"].values()]
            if rule == "last":
                best = max(cand, key=lambda x: x["step"])
            elif rule == "randconv FD":
                best = min(cand, key=lambda x: x["fd_randconv"] if x["fd_randconv"] is not None else np.inf)
            elif rule == "classifier FD, diversity >= 0.5 (cxrgan's rule)":
                ok = [x for x in cand if x["diversity_ratio"] >= 0.5] or cand
                best = min(ok, key=lambda x: x["fd_classifier"])
            elif rule == "coverage x faithfulness":
                best = max(cand, key=lambda x: x["coverage"] * x["faithfulness"])
            else:
                raise ValueError(rule)
            chosen[r] = best["step"]
        return chosen

    rules = ["randconv FD", "classifier FD, diversity >= 0.5 (cxrgan's rule)", "coverage x faithfulness", "last"]
    results, done = [], {}
    for rule in rules:
        chosen = pick(rule)
        key = tuple(sorted(chosen.items()))
        if key not in done:
            xs = np.concatenate([per_run[r]["steps"][s][1] for r, s in chosen.items()])
            ys = np.concatenate([np.full(a.n, per_run[r]["index"]) for r in chosen])
            row, _ = run_arm(rule, xs, ys, val, test, ds.class_names, cfg, seeds, print)
            done[key] = row
        row = dict(done[key])
        row["name"] = rule
        row["steps"] = ", ".join(f"{per_run[r]['class']} {s}" for r, s in chosen.items())
        results.append(row)
        print(rule, row["steps"], f"ROC AUC {row['roc_auc_mean']:.4f} +- {row['roc_auc_std']:.4f}, "
              f"balanced accuracy {row['balanced_accuracy_mean']:.4f} +- {row['balanced_accuracy_std']:.4f}", flush=True)
    md = write_table(results, ["name", "steps", "roc_auc_mean", "roc_auc_std", "balanced_accuracy_mean", "balanced_accuracy_std"],
                     out / "rules")
    write_json_atomic(out / "rules.json", {"feature_space": space.ident, "n": a.n, "seeds": seeds, "rules": results,
                                           "checkpoints": rows})
    print(md)


if __name__ == "__main__":
    main()
