"""Synthetic augmentation under distribution shift: do a generator's images beat cheap augmentation?

Prepares ``../shared/data/cxr_real_64.npz`` (or ``--data`` at ``--size``); with ``--minority-fraction`` below 1,
cuts the smallest class to that fraction of its training images (``cxrgan augment-study --write-imbalanced``),
at 1 keeps the natural imbalance. Trains one DCGAN per class on that data at width ``--channels`` (one ``cxrgan
train`` process per class, ``--parallel`` at a time, one thread each; existing runs are resumed): ``--steps``
steps at batch 64, and a class with fewer than ``--small-class`` training images ``--small-steps`` steps at batch
32 with DiffAugment translation, cutout and colour (a few dozen images are few for D). ``--acquisition S`` trains
every generator with acquisition shifts up to ``S`` times their strong setting. Samples from each run as many images
as the study's arms take of its class, and runs ``cxrgan augment-study`` (BR, BG, IR, RS and GS at each
``--ratios``; the small CNN, epoch chosen on real validation, classifier seeds ``--seeds``, every classifier with
cxrgan's standard augmentation) on the test split and under the 14 acquisition shifts. ``--reference`` reuses the
real-data arms (BR, IR, RS) of an earlier study on the same data and cut.

Writes into ``--results``: ``augment_study.md``/``.csv``, ``shift.md``/``.csv`` and ``shift_balanced_accuracy.png``
of the study, and ``summary.md``: per arm, balanced accuracy and ROC AUC on the test split and averaged over the
shifts (with the worst shift), each beside IR's.

    python benchmarks/shift_augment.py --work /tmp/aug --results docs/results/shift/augmentation-natural
    python benchmarks/shift_augment.py --work /tmp/aug10 --minority-fraction 0.1 --results docs/results/shift/augmentation
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_data_arguments, prepared, run_cli, train_command  # noqa: E402  (sibling scripts)
from long_runs import REAL, ROOT, _run_all  # noqa: E402

from cxrgan.data.dataset import PreparedDataset  # noqa: E402
from cxrgan.evaluate.shift import summarize_conditions  # noqa: E402
from cxrgan.report.tables import markdown_table  # noqa: E402
from cxrgan.studies.usefulness import synthetic_to_sample  # noqa: E402

STUDY_FILES = ("augment_study.md", "augment_study.csv", "shift.md", "shift.csv", "shift_balanced_accuracy.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, REAL, ROOT / "docs" / "results" / "shift" / "augmentation-natural")
    ap.add_argument("--minority-fraction", type=float, default=1.0, help="keep this fraction of the smallest class")
    ap.add_argument("--steps", type=int, default=2000, help="training steps of each class's DCGAN")
    ap.add_argument("--small-class", type=int, default=256, help="classes with fewer training images use the small-class recipe")
    ap.add_argument("--small-steps", type=int, default=1500)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--acquisition", type=float, default=0.0, help="train the generators with acquisition shifts")
    ap.add_argument("--ratios", default="1", help="GS arms: synthetic images as multiples of the training set")
    ap.add_argument("--seeds", default="0,1,2", help="classifier seeds")
    ap.add_argument("--epochs", type=int, help="classifier epochs (default: augment-study's)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--reference", help="an earlier study output (`augment_study.json`'s folder) whose real-data arms "
                    "are reused (refused by augment-study unless the data, cut and classifier are the same)")
    a = ap.parse_args()
    work, results = Path(a.work), Path(a.results)
    work.mkdir(parents=True, exist_ok=True)
    data = prepared(Path(a.data), work / f"real{a.size}", a.size)
    train_data = data  # what the generators see: the study's training split after the cut
    if a.minority_fraction < 1:
        train_data = work / f"cut{a.minority_fraction:g}"
        if not (train_data / "manifest.json").is_file():
            run_cli(["augment-study", "--real", str(data), "--write-imbalanced", str(train_data),
                     "--minority-fraction", f"{a.minority_fraction:g}"])
    ds = PreparedDataset.open(train_data)
    counts = ds.manifest["counts"]["train"]
    ratios = [float(r) for r in a.ratios.split(",") if r]
    tag = f"-acq{a.acquisition:g}" if a.acquisition else ""
    runs = {c: work / f"dcgan-{c}{tag}" for c in ds.class_names}
    _run_all({f"dcgan-{c}{tag}": _train(run, train_data, c, counts[c], a) for c, run in runs.items()}, work, a.parallel)
    need = synthetic_to_sample(ds, ratios)
    sets = []
    for c, run in runs.items():
        synth = work / f"synthetic-{c}{tag}"
        if not (synth / "manifest.json").is_file() or len(PreparedDataset.open(synth)) < need[c]:
            run_cli(["sample", str(run), "--out", str(synth), "--n", str(max(need[c], 1)), "--no-png", "--overwrite"])
        sets.append(str(synth))
    study = work / f"study{tag}"
    if not (study / "augment_study.json").is_file():
        extra = (["--reference", a.reference] if a.reference else []) + (["--epochs", str(a.epochs)] if a.epochs else [])
        run_cli(["augment-study", "--real", str(data), "--synthetic", *sets, "--out", str(study), "--minority-fraction",
                 f"{a.minority_fraction:g}", "--synthetic-ratio", ",".join(f"{r:g}" for r in ratios), "--seeds", a.seeds,
                 *extra])
    results.mkdir(parents=True, exist_ok=True)
    for f in STUDY_FILES:
        if (study / f).is_file():
            shutil.copy(study / f, results / f)
    _summary(study, results)


def _train(run: Path, data: Path, cls: str, n_images: int, a: argparse.Namespace) -> list[str]:
    recipe = (["--steps", str(a.small_steps), "--set", "batch_size=32", "--augment", "translation,cutout,color"]
              if n_images < a.small_class else ["--steps", str(a.steps)])
    return train_command(run, "--model", "dcgan", "--data", str(data), "--classes", cls, "--set",
                         f"model.g_channels={a.channels}", "--set", f"model.d_channels={a.channels}", "--set",
                         "ckpt_every=250", "--acquisition", f"{a.acquisition:g}", *recipe)


def _summary(study: Path, results: Path) -> None:
    """Per arm: balanced accuracy and ROC AUC on the test split and averaged over the acquisition shifts (worst
    shift's balanced accuracy too), and the arm minus IR on each; ``summary.md`` in ``results``."""
    with open(study / "shift.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    arms = [k[: -len(" balanced_accuracy")] for k in table[0] if k.endswith(" balanced_accuracy")]
    # each arm's figure per test condition, summarized as the studies summarize it (in-distribution, acquisition mean, worst)
    per = lambda arm, k: summarize_conditions({r["condition"]: float(r[f"{arm} {k}"]) for r in table})  # noqa: E731
    ir = per("IR", "balanced_accuracy")
    rows = []
    for arm in arms:
        ba, std, auc = per(arm, "balanced_accuracy"), per(arm, "balanced_accuracy std"), per(arm, "roc_auc")
        rows.append({"arm": arm, "test balanced accuracy": f"{ba['in_distribution']:.4f}",
                     "minus IR": f"{ba['in_distribution'] - ir['in_distribution']:+.4f}",
                     "seed std": f"{std['in_distribution']:.4f}",
                     "shifts: mean balanced accuracy": f"{ba['acquisition_mean']:.4f}",
                     "shifts: minus IR": f"{ba['acquisition_mean'] - ir['acquisition_mean']:+.4f}",
                     "shifts: mean seed std": f"{std['acquisition_mean']:.4f}",
                     "worst shift": f"{ba['acquisition_worst']:.3f} ({ba['acquisition_worst_shift']})",
                     "test ROC AUC": f"{auc['in_distribution']:.4f}", "shifts: mean ROC AUC": f"{auc['acquisition_mean']:.4f}"})
    meta = json.loads((study / "augment_study.json").read_text())
    head = (f"Training class counts {meta.get('train_counts')} (minority fraction {meta.get('minority_fraction')}); "
            f"synthetic images taken per arm: {meta.get('synthetic_taken')}.\n\n")
    md = head + markdown_table(rows, list(rows[0]))
    (results / "summary.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
