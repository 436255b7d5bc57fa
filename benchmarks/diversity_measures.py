"""What the training-time diversity figures measure: blur, noise, repeated images, and real runs' checkpoints.

The training loop judges a checkpoint's variety with two figures, both as a ratio to real images of the same
class in the same feature space (``cxrgan.train.quality``): the mean pairwise feature distance of the samples
(``diversity_ratio``) and their effective number of distinct images, the Vendi score (``vendi_ratio``). This
benchmark shows what moves each of them, on real images whose truth is known:

1. Real validation images of each class against real training images, as they are and after a known change:
   Gaussian blur, Gaussian noise, a set made of k distinct images repeated (few-mode collapse), and every image
   shrunk toward the set's mean image (less contrast between images, not fewer of them). Mean over ``--draws``
   random draws of 128 images.
2. With ``--runs``: every checkpoint of each run directory given, re-sampled (``--draws`` sets of 128 latents
   per class) and scored the same way, with the samples' sharpness (mean squared Laplacian) over real images'.
3. With ``--spread`` (instead of 1): how far the training loop's own figures stray when the generator is perfect. A
   ``QualityMonitor`` (as a run builds it: 1,024 real training images, seed ``d``) scores another 1,024 real
   training images with the same class sequence, once per seed, per class (conditional) and pooled: with each
   group capped at 128 images and its own real rows as the reference, at ``DIVERSITY_MAX`` against its own rows,
   and at ``DIVERSITY_MAX`` against every training image (the monitor's rule).

    python benchmarks/diversity_measures.py --data PREPARED_DIR [--runs RUN ...] [--spread] [--out docs/results/.../table.md]

The feature space is the dataset's trained classifier space (trained first when the cache lacks it), as in
``benchmarks/long_runs.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrgan.evaluate.distribution import mean_pairwise_distance, vendi_score
from cxrgan.utils.io import write_text_atomic
from cxrgan.utils.tensors import to_model_range

N = 128


def sharpness(x: torch.Tensor) -> float:
    """Mean squared response to the 4-neighbour Laplacian of images ``(N, 1, S, S)`` in [-1, 1]."""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(x.float(), lap).pow(2).mean())


def figures(feats: np.ndarray) -> np.ndarray:
    """(mean pairwise distance, Vendi score) of a feature set."""
    return np.array([mean_pairwise_distance(feats), vendi_score(feats)])


def ratios(space, fake: torch.Tensor, real: np.ndarray) -> tuple[float, float]:
    """(mean pairwise distance, Vendi score) of ``fake`` over ``real``, the real set's :func:`figures`."""
    r = figures(space.embed(fake.clamp(-1, 1))) / real
    return float(r[0]), float(r[1])


def known_changes(ds, space, draws: int) -> list[str]:
    """Markdown rows: each change of real validation images, both ratios per class (mean over draws)."""
    from cxrgan.evaluate.validation import distort

    labels = np.asarray(ds.labels)
    train, val = ds.indices("train"), ds.indices("val")
    changes = [("as they are", lambda u8, x, rng: x)]
    changes += [(f"blur, sigma {s} px", lambda u8, x, rng, s=s: to_model_range(torch.from_numpy(distort(u8, "blur", s))))
                for s in (0.5, 1.0, 2.0)]
    changes += [(f"noise, sd {s}", lambda u8, x, rng, s=s: to_model_range(torch.from_numpy(distort(u8, "noise", s, seed=int(rng.integers(1 << 30))))))
                for s in (0.05, 0.1)]
    changes += [(f"{k} distinct images, repeated", lambda u8, x, rng, k=k: x[torch.arange(N) % k]) for k in (32, 16, 8, 4, 2)]
    changes += [(f"shrunk toward the mean image, x{a}", lambda u8, x, rng, a=a: x.mean(0, keepdim=True) * (1 - a) + a * x)
                for a in (0.8, 0.6)]
    classes = list(np.unique(labels))
    table = {name: {c: [] for c in classes} for name, _ in changes}
    for d in range(draws):
        rng = np.random.default_rng(d)
        for c in classes:
            real = figures(space.embed(to_model_range(torch.from_numpy(
                np.asarray(ds.images[np.sort(rng.choice(train[labels[train] == c], N, replace=False))])))))
            u8 = np.asarray(ds.images[np.sort(rng.choice(val[labels[val] == c], N, replace=False))])
            x = to_model_range(torch.from_numpy(u8))
            for name, change in changes:
                table[name][c].append(ratios(space, change(u8, x, rng), real))
    head = " | ".join(f"{ds.class_names[c]}: mean distance | {ds.class_names[c]}: Vendi" for c in classes)
    rows = [f"| real validation images | {head} |", "|---" * (1 + 2 * len(classes)) + "|"]
    for name, _ in changes:
        cells = " | ".join(f"{np.mean([r[0] for r in table[name][c]]):.2f} | {np.mean([r[1] for r in table[name][c]]):.2f}" for c in classes)
        rows.append(f"| {name} | {cells} |")
    return rows


@torch.no_grad()
def run_checkpoints(ds, space, run: Path, draws: int) -> list[str]:
    """Markdown rows: every checkpoint of ``run`` re-sampled, worst group's ratios and the sharpness ratio."""
    from cxrgan.sample import draw_latents, load_run
    from cxrgan.train.checkpoint import list_checkpoints

    labels = np.asarray(ds.labels)
    train = ds.indices("train")
    rows = []
    for step in list_checkpoints(run):
        loaded = load_run(run, step)
        groups = list(np.unique(labels)) if loaded.family.conditional else [None]
        per = {g: [] for g in groups}
        for d in range(draws):
            rng, gen = np.random.default_rng(d), torch.Generator().manual_seed(100 + d)
            for g in groups:
                pool = train if g is None else train[labels[train] == g]
                x_real = to_model_range(torch.from_numpy(np.asarray(ds.images[np.sort(rng.choice(pool, N, replace=False))])))
                y = torch.full((N,), 0 if g is None else int(g), dtype=torch.long)
                fake = loaded.family.generate(draw_latents(loaded, N, gen), y).float()
                per[g].append((*ratios(space, fake, figures(space.embed(x_real))), sharpness(fake.clamp(-1, 1)) / sharpness(x_real)))
        means = {g: np.mean(v, axis=0) for g, v in per.items()}
        worst_d = min(means, key=lambda g: means[g][0])
        worst_v = min(means, key=lambda g: means[g][1])
        name = lambda g: "all" if g is None else ds.class_names[g]  # noqa: E731
        rows.append(f"| {run.name} | {step} | {means[worst_d][0]:.2f} ({name(worst_d)}) | {means[worst_v][1]:.2f} ({name(worst_v)}) | "
                    + ", ".join(f"{name(g)} {m[2]:.2f}" for g, m in means.items()) + " |")
    return rows


def spread(ds, space, draws: int) -> list[str]:
    """Markdown rows: the monitor's diversity and Vendi ratios for real images scored as if generated (1 = truth)."""
    from cxrgan.train import quality
    from cxrgan.train.data import TrainData

    data = TrainData(ds, "train")
    rows = ["| monitor groups | images per group (at most) | real reference | diversity ratio: mean, sd, 5th percentile, lowest | "
            "Vendi ratio: mean, sd, 5th percentile, lowest |", "|---|---|---|---|---|"]
    # (group cap, reference_max): 128 against the monitor's rows, then 1,024, then 1,024 against every training image
    setups = ((128, 0), (quality.DIVERSITY_MAX, 0), (quality.DIVERSITY_MAX, quality.REFERENCE_MAX))
    for conditional in (True, False):
        for cap, reference in setups:
            got = []
            for seed in range(draws):
                mon = quality.QualityMonitor(data, 1024, 8, seed, torch.device("cpu"), space, conditional, group_max=cap,
                                             reference_max=reference)
                taken = np.zeros(len(data), bool)
                taken[mon.rows] = True
                rng = np.random.default_rng([seed, 5])
                y = mon.y.numpy()
                fake_rows = np.empty(len(y), np.int64)
                for c in np.unique(y):
                    where = np.flatnonzero(y == c)
                    fake_rows[where] = rng.choice(np.flatnonzero(~taken & (data.labels == c)), len(where), replace=False)
                figs = mon.score(to_model_range(torch.from_numpy(data.uint8(fake_rows))))
                got.append((figs["diversity_ratio"], figs["vendi_ratio"]))
            g = np.array(got)
            cells = " | ".join(f"{g[:, i].mean():.3f}, {g[:, i].std():.3f}, {np.percentile(g[:, i], 5):.3f}, {g[:, i].min():.3f}"
                               for i in (0, 1))
            ref = "the monitor's rows" if not reference else f"every training image (at most {reference:,})"
            rows.append(f"| {'per class (worst)' if conditional else 'pooled'} | {cap} | {ref} | {cells} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a prepared dataset directory")
    ap.add_argument("--runs", nargs="*", default=[], help="run directories whose checkpoints to re-measure")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--spread", action="store_true", help="the monitor's own figures for real images (one draw per seed) instead of the known changes")
    ap.add_argument("--out", help="also write the tables here (markdown)")
    a = ap.parse_args()

    from cxrgan.data import PreparedDataset
    from cxrgan.evaluate.extractors import ensure_extractors

    torch.manual_seed(0)
    ds = PreparedDataset.open(a.data)
    space = ensure_extractors(ds, ["classifier"])["classifier"]
    sets = "the monitor's 1,024 images per seed" if a.spread else f"{N} images per set, mean of {a.draws} draws"
    lines = [f"Feature space {space.ident}; {sets}; "
             f"{os.cpu_count()} CPUs, torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}.", ""]
    if a.spread:
        lines += [f"The training loop's monitor scoring real images as if generated, {a.draws} seeds:", ""]
        lines += spread(ds, space, a.draws)
    else:
        lines += ["Both ratios against 128 real training images of the same class (1 = as varied as real images).", ""]
        lines += known_changes(ds, space, a.draws)
    if a.runs:
        lines += ["", "| run | step | mean distance (worst group) | Vendi (worst group) | sharpness over real |", "|---|---|---|---|---|"]
        for run in a.runs:
            lines += run_checkpoints(ds, space, Path(run), max(1, a.draws // 2 + 1))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        write_text_atomic(Path(a.out), text)


if __name__ == "__main__":
    main()
