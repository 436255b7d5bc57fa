"""Which sampling settings make synthetic radiographs teach decisions that hold under shift?

Takes the generators that ``benchmarks/shift_tstr.py`` trained in ``--work`` (the CGAN, the per-class DCGAN pair,
the semi-conditional GAN, the ddpm) and samples each of ``--variants`` from them: the latent noise at another
temperature (``cxrgan sample --temperature``), two or three generators mixed in equal parts (same total count), the ddpm with
classifier-free guidance (guidance above 1 pushes each image away from the unconditional one, towards its class).
It also trains the CGAN and the pair again with acquisition augmentation (``augment.acquisition=1``: every training
image shifted at random in exposure, contrast, sharpness, noise, rotation, translation and zoom, each up to its
strong setting), so that the generator itself draws radiographs acquired in all those ways.
Each set is measured by ``cxrgan tstr`` under the standard shift protocol, all against one TRTR reference
(``tstr --reference``), so the variants differ only in the synthetic images.

Settings are chosen without the test split: the real validation split is cut in two halves (stratified by class,
seed 0), one picks the classifier's epoch and threshold, the other is the tuning "test" set, with its 14 shifted
copies (``tune64``). ``--final NAME,...`` then measures the named variants once on the real test split
(``real64``, the same protocol as ``shift_tstr.py``, whose ``tstr-*-small-validation`` studies are the baselines).
Writes ``summary.md`` / ``summary.csv`` into ``--results``: per variant, TSTR and TRTR ROC AUC and balanced
accuracy, the TSTR/TRTR ratios on the tuning set and averaged over its shifts (and the worst), the seed-spread
ratio, and the pixel statistics the leads were about (class-mean difference against real, within-class spread).

    python benchmarks/shift_tstr.py --work /tmp/shift --generators cgan,dcgan-pair,semicond,ddpm
    python benchmarks/transfer_study.py --work /tmp/shift --results docs/results/shift/transfer
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import prepared, run_cli, train_command  # noqa: E402  (sibling scripts)
from long_runs import REAL, ROOT, _run_all  # noqa: E402
from shift_tstr import _row  # noqa: E402

from cxrgan.data import PreparedDataset  # noqa: E402

GENERATOR_RUNS = {"pair": ["dcgan-pair-NORMAL", "dcgan-pair-PNEUMONIA"], "cgan": ["cgan"], "semicond": ["semicond"], "ddpm": ["ddpm"],
                  "pair-acq": ["dcgan-pair-acq-NORMAL", "dcgan-pair-acq-PNEUMONIA"], "cgan-acq": ["cgan-acq"]}
# Generators this script trains itself (shift_tstr.py trains the others): the same recipe as there, with the
# training images shifted at random by every acquisition kind, each up to its strong setting.
ACQUISITION = ["--set", "augment.acquisition=1.0"]
# name: (generator or generators mixed half and half, extra `cxrgan sample` arguments)
VARIANTS: dict[str, tuple[list[str], list[str]]] = {
    "pair-t1": (["pair"], []), "pair-t0.75": (["pair"], ["--temperature", "0.75"]),
    "pair-t1.25": (["pair"], ["--temperature", "1.25"]), "pair-t1.5": (["pair"], ["--temperature", "1.5"]),
    "cgan-t1": (["cgan"], []), "cgan-t1.25": (["cgan"], ["--temperature", "1.25"]), "cgan-t1.5": (["cgan"], ["--temperature", "1.5"]),
    "semicond-t1": (["semicond"], []), "semicond-t1.25": (["semicond"], ["--temperature", "1.25"]),
    "semicond-t1.5": (["semicond"], ["--temperature", "1.5"]), "semicond-t2": (["semicond"], ["--temperature", "2"]),
    "mix-pair-cgan": (["pair", "cgan"], []), "mix-pair-semicond": (["pair", "semicond"], []),
    "mix-pair-cgan-semicond": (["pair", "cgan", "semicond"], []),
    "ddpm-s10-g1": (["ddpm"], ["--checkpoint", "last", "--sample-steps", "10", "--guidance", "1"]),
    "ddpm-s10-g2": (["ddpm"], ["--checkpoint", "last", "--sample-steps", "10", "--guidance", "2"]),
    "pair-acq-t1": (["pair-acq"], []), "cgan-acq-t1": (["cgan-acq"], []),
}


def train_acquisition_runs(names: list[str], work: Path, data: Path, a: argparse.Namespace) -> None:
    """Train (or resume) the acquisition-augmented generators that ``names``' variants use, ``--parallel`` at a time."""
    jobs = {}
    for g in sorted({g for n in names for g in VARIANTS[n][0] if g.endswith("-acq")}):
        for run in GENERATOR_RUNS[g]:
            budget = (["--model", "dcgan", "--classes", run.rsplit("-", 1)[1], "--steps", str(a.pair_steps)]
                      if run.startswith("dcgan-pair") else ["--model", "cgan", "--epochs", str(a.epochs)])
            jobs[run] = train_command(work / run, "--data", str(data), "--set", f"model.g_channels={a.channels}", "--set",
                                      f"model.d_channels={a.channels}", "--set", "ckpt_every=250", *ACQUISITION, *budget)
    if jobs:
        _run_all(jobs, work, a.parallel)


def tuning_split(src: Path, out: Path, seed: int = 0) -> Path:
    """``src`` (a MedMNIST-style npz) with its validation split cut in two halves, stratified by class: the first
    stays validation, the second becomes the test split; the test split of ``src`` is left out. Prepared once."""
    if (out / "manifest.json").is_file():
        return out
    d = np.load(src)
    rng = np.random.default_rng(seed)
    y = d["val_labels"]
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep += idx[: len(idx) // 2].tolist()
        held += idx[len(idx) // 2 :].tolist()
    keep, held = np.sort(keep), np.sort(held)
    npz = out.parent / f"{out.name}.npz"
    np.savez(npz, train_images=d["train_images"], train_labels=d["train_labels"], val_images=d["val_images"][keep],
             val_labels=y[keep], test_images=d["val_images"][held], test_labels=y[held], class_names=d["class_names"])
    run_cli(["prepare", str(npz), "--out", str(out), "--size", str(d["train_images"].shape[-1])])
    return out


def sample_variant(name: str, work: Path, study: Path, n: int) -> list[Path]:
    """The synthetic set(s) of variant ``name`` (``n`` images per class in all), sampled once into ``study``."""
    gens, extra = VARIANTS[name]
    sets = []
    for g in gens:
        out = study / (name if len(gens) == 1 else f"{name}-part-{g}")
        if not (out / "manifest.json").is_file():
            runs = [str(work / r) for r in GENERATOR_RUNS[g]]
            share = n // len(gens)
            count = share if len(runs) > 1 else 2 * share  # a pair's runs give n each; one conditional run n per class
            seed = "1" if len(gens) > 1 else "0"  # a mixture's halves are other images than the single sets'
            run_cli(["sample", *runs, "--out", str(out), "--n", str(count), "--no-png", "--seed", seed, *extra])
        sets.append(out)
    return sets


def pixel_stats(sets: list[Path], real: Path) -> dict[str, float]:
    """Class-mean difference (PNEUMONIA - NORMAL, L2) against the real training images', and the within-class pixel
    standard deviation averaged over the classes, synthetic against real."""
    def stats(x: np.ndarray, y: np.ndarray, names: list[str]) -> tuple[np.ndarray, float]:
        means = {names[c]: x[y == c].mean(0) for c in np.unique(y)}
        return means["PNEUMONIA"] - means["NORMAL"], float(np.mean([x[y == c].std(0).mean() for c in np.unique(y)]))

    ds = PreparedDataset.open(real)
    tr = ds.indices("train")
    rd, rs = stats(np.asarray(ds.images[tr], np.float32), np.asarray(ds.labels)[tr], ds.class_names)
    xs, ys = [], []
    for s in sets:
        sd = PreparedDataset.open(s)
        xs.append(np.asarray(sd.images, np.float32))
        ys.append(np.array([ds.class_names.index(sd.class_names[i]) for i in np.asarray(sd.labels)]))
    sdiff, sstd = stats(np.concatenate(xs), np.concatenate(ys), ds.class_names)
    return {"class_difference_vs_real": float(np.linalg.norm(sdiff) / np.linalg.norm(rd)), "within_class_std_vs_real": sstd / rs}


def measure(name: str, sets: list[Path], real: Path, out: Path, reference: Path | None, seeds: str) -> dict:
    if not (out / "tstr.json").is_file():
        ref = ["--reference", str(reference)] if reference is not None and out != reference else []
        run_cli(["tstr", "--synthetic", *map(str, sets), "--real", str(real), "--out", str(out), "--arch", "small",
                 "--epoch-choice", "validation", "--seeds", seeds, *ref])
    return json.loads((out / "tstr.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="shift_tstr.py's --work: the trained runs (and real64)")
    ap.add_argument("--study", help="where sets and studies go (default WORK/transfer)")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results" / "shift" / "transfer"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--final", default="", help="variants to measure once on the real test split")
    ap.add_argument("--n", type=int, default=1000, help="synthetic images per class")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=50, help="the acquisition-augmented CGAN's training epochs")
    ap.add_argument("--pair-steps", type=int, default=2000, help="each acquisition-augmented DCGAN's steps")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="sample and measure nothing: tabulate what exists")
    a = ap.parse_args()
    work = Path(a.work)
    study = Path(a.study) if a.study else work / "transfer"
    study.mkdir(parents=True, exist_ok=True)
    tune = tuning_split(REAL, study / "tune64")
    real = prepared(REAL, work / "real64")
    if not a.report_only:
        train_acquisition_runs([v for v in (a.variants + "," + a.final).split(",") if v in VARIANTS], work, real, a)
    rows = []
    for split, names, data in (("tuning", a.variants, tune), ("test", a.final, real)):
        names = [v for v in names.split(",") if v]
        reference = None
        for name in names:
            if name not in VARIANTS:
                raise SystemExit(f"unknown variant {name!r}; one of {', '.join(VARIANTS)}")
            out = study / f"{'tune' if split == 'tuning' else 'test'}-{name}"
            sets = [study / (name if len(VARIANTS[name][0]) == 1 else f"{name}-part-{g}") for g in VARIANTS[name][0]]
            if a.report_only and not (out / "tstr.json").is_file():
                print(f"{name} ({split}): not measured, left out")
                continue
            if not a.report_only:
                sets = sample_variant(name, work, study, a.n)
            s = measure(name, sets, data, out, reference, a.seeds)
            reference = reference or out
            rows.append({"split": split, **_row(name, "small:validation", s), **pixel_stats(sets, real)})
    _write(rows, Path(a.results))


def _write(rows: list[dict], results: Path) -> None:
    if not rows:
        return
    results.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    with open(results / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    (results / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
