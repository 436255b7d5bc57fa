"""The ``cxrgan`` command: thin verbs over the library (parse, call, print).

User errors (:class:`~cxrgan.errors.CxrganError`) are printed as one line ``cxrgan: error: ...`` with
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .version import __version__
from .errors import CxrganError

if TYPE_CHECKING:
    from .train.loop import RunResult

Handler = Callable[[argparse.Namespace], int]


def _csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


# --------------------------------------------------------------------------------------------- data
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="read images (folder, CSV, DICOM, npz, parquet, phantom, digits) into a prepared dataset",
                       description="Read SOURCE and write a prepared dataset to --out. SOURCE is a folder with one "
                       "sub-folder per class (optionally under train/val/test), a flat folder with --labels CSV, a "
                       "MedMNIST-style .npz, a Hugging Face .parquet file or folder, 'phantom' (the embedded radiograph phantoms "
                       "with lesion masks) or 'digits' (scikit-learn's bundled 8x8 handwritten digits, for the dgm anomaly "
                       "demonstration with --normal-class 1).")
    p.add_argument("source")
    p.add_argument("--out", required=True, help="output dataset directory (must not exist unless --overwrite)")
    p.add_argument("--size", type=int, default=64, help="output side in px: 32, 64, 128 or 256 (default 64)")
    p.add_argument("--fit", choices=("crop", "pad"), default="crop", help="square by centre crop or by padding")
    p.add_argument("--equalize", action="store_true", help="histogram-equalize after resizing")
    p.add_argument("--intensity", choices=("auto", "minmax", "percentile"), default="auto")
    p.add_argument("--classes", help="comma-separated classes to keep, in this order (default: all)")
    p.add_argument("--labels", dest="labels_csv", help="labels CSV for a flat folder (NIH Data_Entry_2017.csv style)")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--patient-column")
    p.add_argument("--patient-regex", help=r"regex whose first group is a patient id in a file path, e.g. '(person\d+)_'")
    p.add_argument("--multilabel", action="store_true", help="keep multi-finding images as multi-hot labels")
    p.add_argument("--class-names", help="comma-separated names for integer labels (npz/parquet without names)")
    p.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions when the source has no splits")
    p.add_argument("--seed", type=int, default=0, help="seed for splits and the phantom")
    p.add_argument("--count", type=int, default=1200, help="phantom: number of images")
    p.add_argument("--mix", help="phantom: class fractions NORMAL,PNEUMONIA,COVID (default 0.4,0.3,0.3)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable file instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace --out once the new dataset is complete")
    p.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(a: argparse.Namespace) -> int:
    from .data import Preprocess, SourceOptions, SplitOptions, prepare
    from .data.splits import parse_fractions
    from .data.summary import info_text

    mix = None
    if a.mix:
        try:
            mix = [float(v) for v in a.mix.split(",")]
        except ValueError:
            raise CxrganError(f"--mix {a.mix!r}: expected fractions like 0.4,0.3,0.3") from None
    opts = SourceOptions(
        classes=_csv_list(a.classes), labels_csv=a.labels_csv, image_column=a.image_column,
        label_column=a.label_column, patient_column=a.patient_column, patient_regex=a.patient_regex,
        multilabel=a.multilabel, class_names=_csv_list(a.class_names), count=a.count, mix=mix, seed=a.seed,
    )
    ds = prepare(a.source, a.out, Preprocess(a.size, a.fit, a.equalize, a.intensity), opts,
                 SplitOptions(parse_fractions(a.split), a.seed), strict=a.strict, overwrite=a.overwrite,
                 workers=a.workers, progress=not a.quiet)
    print(info_text(ds))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print counts per class and split, and the preprocessing, of a dataset")
    p.add_argument("dataset")
    p.set_defaults(func=_cmd_info)


def _cmd_info(a: argparse.Namespace) -> int:
    from .data import PreparedDataset
    from .data.summary import info_text

    print(info_text(PreparedDataset.open(a.dataset)))
    return 0


def _add_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="write a labelled grid PNG of a dataset (one row per class)")
    p.add_argument("dataset")
    p.add_argument("--out", help="PNG path (default DATASET/preview.png)")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--split", default="train", help="train, val, test or all")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn for the grid")
    p.set_defaults(func=_cmd_preview)


def _cmd_preview(a: argparse.Namespace) -> int:
    from .data import PreparedDataset
    from .data.summary import preview

    ds = PreparedDataset.open(a.dataset)
    out = preview(ds, a.out or Path(a.dataset) / "preview.png", a.per_class, None if a.split == "all" else a.split, a.seed)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------------------- training
def _add_train(sub: argparse._SubParsersAction) -> None:
    from .models.losses import LOSS_KINDS
    from .models.registry import family_names

    p = sub.add_parser("train", help="train a GAN family on a prepared dataset into a run directory",
                       description="Train --model on --data into the run directory --out. The configuration is "
                       "defaults < --config YAML < the flags below < --set key=value; the exact config is saved "
                       "as OUT/config.yaml. With --resume, OUT's own config is used (flags may extend it, e.g. --steps).")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--model", choices=family_names(), help="model family (default dcgan)")
    p.add_argument("--data", help="prepared dataset directory")
    p.add_argument("--config", help="YAML file with a TrainConfig tree")
    p.add_argument("--classes", help="train on these classes only (per-class DCGANs: --classes PNEUMONIA)")
    p.add_argument("--steps", type=int, help="G update budget (default 2000; cgan and semicond 4500, 80 epochs of "
                   "the 3,632 Kermany training images, measured better than 50 under shift: docs/results/shift)")
    p.add_argument("--epochs", type=int, help="epoch budget (overrides --steps)")
    p.add_argument("--batch-size", type=int, help="images per step, over all processes (default 64)")
    p.add_argument("--loss", choices=LOSS_KINDS)
    p.add_argument("--lr", type=float, help="learning rate of both G and D")
    p.add_argument("--augment", help="DiffAugment policy, e.g. translation,cutout,color")
    p.add_argument("--acquisition", type=float, metavar="SCALE",
                   help="shift every training image at random in exposure, contrast, sharpness, noise, rotation, "
                   "translation and zoom, each up to SCALE times its strong setting (augment.acquisition; 0 = off, the "
                   "default). The generator then draws radiographs acquired in all those ways: with 1, classifiers "
                   "trained on its images alone kept 0.99-1.00 of a real-trained classifier's ROC AUC under "
                   "acquisition shifts (0.97-0.98 at 0), and its images added to the real ones of every class raised a "
                   "classifier's balanced accuracy under those shifts from 0.965 to 0.979, at the cost "
                   "of fidelity to the training images (FD, precision); see docs/results/shift")
    p.add_argument("--seed", type=int, help="seeds weights, latents, data order and augmentation (default 0)")
    p.add_argument("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="auto (default): bf16 autocast on CPUs with native bf16 and on CUDA at large batches, else fp32")
    p.add_argument("--on-collapse", choices=("continue", "stop", "rollback"),
                   help="when diversity collapses: warn and go on (default), stop (exit status 3), or roll back to the last "
                   "healthy checkpoint with a lower D learning rate")
    p.add_argument("--code", dest="codes", action="append", metavar="DIST:DIM[:K=V,...]",
                   help="semicond: a latent code block, repeatable, e.g. --code bernoulli:5:p=0.5 --code exponential:5:rate=1 "
                   "--code uniform:5:low=-1,high=1 --code normal:5 (the default set)")
    p.add_argument("--code-correlation", type=float, help="semicond: correlation between the dimensions of each code block")
    p.add_argument("--normal-class", help="dgm: the normal class it learns to synthesize and trains on (default NORMAL)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set loss.r1_gamma=1 --set model.spectral_norm=true (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue OUT from its last checkpoint")
    p.set_defaults(func=_cmd_train)


def _cmd_train(a: argparse.Namespace) -> int:
    from .report.plots import plot_run
    from .train.config import load_config
    from .train.loop import train

    flags = {"model.family": a.model, "data.path": a.data, "data.classes": a.classes, "steps": a.steps,
             "epochs": a.epochs, "batch_size": a.batch_size, "loss.kind": a.loss, "optim.lr_g": a.lr, "optim.lr_d": a.lr,
             "augment.policy": a.augment, "augment.acquisition": a.acquisition, "seed": a.seed, "device": a.device, "precision": a.precision,
             "on_collapse": a.on_collapse, "model.code_correlation": a.code_correlation,
             "model.codes": json.dumps(a.codes) if a.codes else None, "model.normal_class": a.normal_class}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(a.overrides)
    if a.resume:
        if a.config:
            raise CxrganError("--resume uses the run's own config.yaml; drop --config (use --set to change a field)")
        config_path = Path(a.out) / "config.yaml"
        if not config_path.is_file():
            from .train.rundir import unstarted

            if Path(a.out).exists() and not unstarted(a.out):
                raise CxrganError(f"{a.out} is not a run directory (no config.yaml); start it without --resume")
            config_path = None  # never started, or killed before it wrote its config: start from the flags
            logging.getLogger("cxrgan.train").warning("%s has no saved config yet: starting it from step 0", a.out)
    else:
        config_path = a.config
    cfg = load_config(config_path, overrides)
    result = train(cfg, a.out, resume=a.resume and config_path is not None, progress=not a.quiet, on_end=plot_run)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return 130 if result.interrupted else 3 if result.stopped_on_collapse else 0
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint written. Continue with: cxrgan train --resume --out {a.out}")
        return 130
    if result.stopped_on_collapse:
        print(f"stopped at step {result.step}: mode collapse (see {a.out}/samples). Continue with: cxrgan train --resume --out {a.out}")
        return 3
    print(f"trained {result.step} steps into {a.out}{best_summary(result)}")
    if result.collapse_step is not None:
        print(collapse_summary(result, cfg.collapse_ratio))
    return 0


def best_summary(result: RunResult) -> str:
    """``", best checkpoint step N (FIGURE)"`` with the figure that chose it (FD, or the family's own, such as the
    DGM's validation ROC AUC, or the rule that the latest healthy checkpoint is best); ``""`` without one."""
    if result.best_step is None:
        return ""
    if result.best_key == "step":
        figure = "the latest healthy checkpoint; see best.json"
    elif result.best_key in (None, "fd"):
        figure = f"FD {result.best_fd:.4g}"
    else:
        figure = f"{result.best_what or result.best_key} {float(result.best_value):.4g}"
    return f", best checkpoint step {result.best_step} ({figure})"


def collapse_summary(result: RunResult, threshold: float) -> str:
    """One line on a run whose diversity fell below ``threshold`` of real at some evaluation: whether it was still
    below at the last evaluation (a warning) or recovered (a note; no checkpoint below it was chosen as best)."""
    from .train.quality import health

    now, what = health(result.last_eval) if result.last_eval.get("diversity") not in (None, "") else (None, "")
    if now is not None and now >= threshold:
        return (f"note: sample diversity fell below {threshold:g} of real at step {result.collapse_step} and recovered "
                f"({now:.2f} at the last evaluation); checkpoints below the threshold are never chosen as best")
    return (f"warning: possible mode collapse from step {result.collapse_step}"
            + (f" ({what} {now:.2f} of real at the last evaluation)" if now is not None else "")
            + f"; look at {result.run}/samples")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate a labelled synthetic set (PNG + npz dataset + manifest) from runs")
    p.add_argument("runs", nargs="+", help="run directories (several per-class runs combine into one set)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000, help="images per run (default 1000)")
    p.add_argument("--class", dest="classes", help="class(es) to generate, comma-separated")
    p.add_argument("--truncation", type=float, help="truncation trick: redraw latent values beyond +-PSI")
    p.add_argument("--temperature", type=float, default=1.0, help="multiply the latent noise by T after truncation "
                   "(default 1: the training prior; above 1 wider and more varied, below 1 narrower; a semicond run's "
                   "codes are left alone)")
    p.add_argument("--seed", type=int, default=0, help="seeds the latents (the same seed gives the same images)")
    p.add_argument("--seed-per-image", action="store_true", help="draw image i from seed SEED+i alone, so that one image "
                   "can be drawn again with --n 1 --seed SEED+i (the app's seeds); the manifest records each image's seed")
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-png", action="store_true", help="write only the dataset arrays")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--code", dest="codes", action="append", metavar="BLOCK=V[,V...]",
                   help="semicond runs: fix a code block, e.g. --code exponential=0.2,0.5,1,2,3 (one value per dimension, "
                   "or one for all); other blocks are drawn from their distributions (repeatable)")
    p.add_argument("--sample-steps", type=int, help="ddpm runs: DDIM steps (default: the run's model.sample_steps); "
                   "fewer is faster")
    p.add_argument("--guidance", type=float, help="ddpm runs: classifier-free guidance weight (1 = none, one network "
                   "pass per step; above 1 two passes; default: the run's model.guidance)")
    p.add_argument("--eta", type=float, help="ddpm runs: DDIM's eta, from 0 (no noise added while sampling) to 1 (as much "
                   "as the ancestral sampler; each image's noise is seeded by its latent); default: the run's model.sample_eta")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(a: argparse.Namespace) -> int:
    from .data.summary import info_text
    from .sample import sample

    ds = sample(a.runs, a.out, a.n, _csv_list(a.classes), a.truncation, a.seed, a.checkpoint, a.device, a.overwrite, not a.no_png,
                codes=a.codes, sample_steps=a.sample_steps, guidance=a.guidance, progress=not a.quiet, eta=a.eta,
                seed_per_image=a.seed_per_image, temperature=a.temperature)
    print(info_text(ds))
    src = ds.manifest.get("source", {})
    if src.get("seconds") is not None:
        print(f"sampled {len(ds)} images in {src['seconds']:.1f} s ({1000 * src['seconds_per_image']:.1f} ms per image)")
    return 0


def _add_traverse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("traverse", help="semicond: image grid sweeping one code block (a row per class), and code recovery",
                       description="Renders one row per class; along a row one code block (or one of its dimensions, --dim) "
                       "sweeps its 5th to 95th percentile while the noise and the other blocks stay fixed. --measure prints how "
                       "well the discriminator recovers each block from fresh samples (R^2, or accuracy for Bernoulli blocks).")
    p.add_argument("run")
    p.add_argument("--block", help="code block to sweep (e.g. exponential); required unless --measure alone")
    p.add_argument("--dim", type=int, help="sweep only this dimension of the block (0-based); the others keep their drawn values")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", help="PNG to write")
    p.add_argument("--class", dest="classes", help="classes (rows), comma-separated; default all")
    p.add_argument("--seed", type=int, default=0, help="seeds the latents held fixed while a block is swept")
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.add_argument("--measure", action="store_true", help="print code recovery figures")
    p.set_defaults(func=_cmd_traverse)


def _cmd_traverse(a: argparse.Namespace) -> int:
    from .sample import code_recovery, traverse

    if not a.measure and not (a.block and a.out):
        raise CxrganError("traverse needs --block and --out (or --measure)")
    if a.block and a.out:
        path = traverse(a.run, a.block, a.out, steps=a.steps, dim=a.dim, classes=_csv_list(a.classes), seed=a.seed,
                        checkpoint=a.checkpoint)
        print(f"wrote {path}")
    if a.measure:
        for key, value in code_recovery(a.run, checkpoint=a.checkpoint).items():
            print(f"{key:28s} {value:.3f}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="comparative study of runs: combined curves, sample grid, summary table")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(a: argparse.Namespace) -> int:
    from .report.compare import compare

    out = compare(a.runs, a.out, checkpoint=a.checkpoint)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/losses.png, d_accuracy.png, quality.png, samples.png, summary.csv")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of runs, datasets and studies (or a folder holding them)",
                       description="Gather every cxrgan output under the given paths (runs, prepared datasets, synthetic sets, "
                       "compare, evaluate, tstr, augment-study, anomaly and decompose folders, or a folder such as the demo's "
                       "that holds them) into one HTML file with every image inlined. Parts that are missing are named.")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_STUDY")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--title", default="cxrgan report")
    p.set_defaults(func=_cmd_report)


def _cmd_report(a: argparse.Namespace) -> int:
    from .report.html import build_report

    print(f"wrote {build_report(a.paths, a.out, a.title)}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training speed of every family on this machine, against a plain loop timed in the same run",
                       description="Times a plain eager PyTorch DCGAN loop (the reference), then every family through "
                       "cxrgan's training loop with its defaults and in fp32, and prints img/s, the ratio to the reference "
                       "and GFLOP/s, with the CPU capability (and on a GPU the fraction of its measured bf16 matmul rate); then "
                       "how fast each family draws images (a ddpm at its default DDIM steps and guidance).")
    p.add_argument("--families", default=",".join(("gan", "dcgan", "cgan", "bigan", "semicond", "dgm", "ddpm")))
    p.add_argument("--size", type=int, default=64, help="image size of the generated benchmark data (px)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--iters", type=int, default=20, help="timed steps per variant (after warm-up)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also time the default with torch.compile")
    p.add_argument("--data", help="a prepared dataset to train on (default: phantoms made for the benchmark)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench import run_bench

    if a.iters < 1 or a.batch_size < 2:
        raise CxrganError("--iters must be at least 1 and --batch-size at least 2")
    run_bench(_csv_list(a.families) or [], a.size, a.batch_size, a.iters, a.device, a.compile, a.data)
    return 0


def _add_decompose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompose", help="dgm: split radiographs into the synthesized normal image and the residual (disease)",
                       description="For each input (files, folders, or a prepared dataset's --split) writes OUT/normal/, "
                       "OUT/residual/ (grey = no difference, brighter = denser than normal) and OUT/overlay/ PNGs, and "
                       "OUT/scores.csv with every anomaly score. Unreadable inputs are listed with the reason; the rest go on.")
    p.add_argument("run", help="a dgm run directory")
    p.add_argument("inputs", nargs="+", help="image files, folders, or prepared dataset directories")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", help="split of prepared-dataset inputs (train, val, test; default test)")
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.add_argument("--device", default="auto")
    p.add_argument("--score-shift", type=int, default=None, metavar="PX",
                   help="residual maps as the consensus of the input shifted by up to PX pixels (0: one pass of G; "
                   "default: the run's model.score_shift, 1 unless set)")
    p.set_defaults(func=_cmd_decompose)


def _cmd_decompose(a: argparse.Namespace) -> int:
    from .decompose import decompose

    rows = decompose(a.run, a.inputs, a.out, checkpoint=a.checkpoint, split=a.split, device=a.device, score_shift=a.score_shift)
    bad = [r for r in rows if r["error"]]
    for r in bad:
        print(f"skipped: {r['error']}", file=sys.stderr)
    print(f"decomposed {len(rows) - len(bad)} image(s) into {a.out} (normal/, residual/, overlay/, scores.csv)"
          + (f"; {len(bad)} skipped" if bad else ""))
    return 0


def _add_anomaly(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomaly", help="dgm: anomaly detection on a dataset's test split beside three baselines",
                       description="Scores the test split with the dgm run, a plain autoencoder, a PatchCore-style patch memory "
                       "and the distance to the mean normal image; the DGM score (--score auto) and every threshold are chosen "
                       "on the validation split. Writes anomaly.json, report.md, scores.csv, roc.png, box.png, an example "
                       "panel per cell of the confusion matrix that holds a test image, and shift.md/shift.csv/shift_roc_auc.png for the shift protocol's test sets.")
    p.add_argument("run", help="a dgm run directory")
    p.add_argument("--data", required=True, help="prepared dataset (its val and test splits are used)")
    p.add_argument("--normal-class", default="NORMAL")
    p.add_argument("--out", required=True)
    p.add_argument("--score", default="auto", help="auto (best on validation) or encoding, residual, residual_l2, opacity, peak, dfeature, encoding_opacity")
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.add_argument("--baseline-epochs", type=int, default=10, help="training epochs of the autoencoder baseline")
    p.add_argument("--seed", type=int, default=0, help="seeds the baselines' training")
    p.add_argument("--device", default="auto")
    p.add_argument("--score-shift", type=int, default=None, metavar="PX",
                   help="residual maps as the consensus of the input shifted by up to PX pixels (0: one pass of G; "
                   "default: the run's model.score_shift, 1 unless set)")
    _shift_args(p)
    p.add_argument("--site-normals", metavar="DATASET", help="normal radiographs from the site the test images come from "
                   "(a prepared dataset; its normal-class images, every split): each method gets a second threshold there, "
                   "set so that they are called normal as often as the validation normals were, and the report gives "
                   "sensitivity and specificity at it beside the validation threshold's")
    p.set_defaults(func=_cmd_anomaly)


def _cmd_anomaly(a: argparse.Namespace) -> int:
    from .decompose import anomaly

    anomaly(a.run, a.data, a.out, a.normal_class, a.checkpoint, a.score, a.baseline_epochs, a.seed, a.device, a.score_shift,
            a.shifts, a.test_data, site_normals=a.site_normals)
    print((Path(a.out) / "report.md").read_text())
    return 0


# --------------------------------------------------------------------------------------- evaluation
def _shift_args(p: argparse.ArgumentParser) -> None:
    from .data.acquisition import KINDS

    p.add_argument("--shifts", default="standard", metavar="SPEC",
                   help="test sets beside the test split: the test split under acquisition shifts. 'standard' = each of "
                   f"{', '.join(KINDS)} at mild and strong (about one and two standard deviations of real radiographs' own "
                   "spread; directed shifts move each image either way), 'none', or a list such as exposure:strong,zoom")
    p.add_argument("--test-data", nargs="+", default=[], metavar="DATASET",
                   help="other prepared datasets with the same class names, each an external test set (its test split, "
                   "or every image when it has none)")


def _classifier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2", help="classifier seeds (mean and std over them), default 0,1,2")
    p.add_argument("--arch", choices=("small", "resnet18"), default="small", help="classifier network")
    p.add_argument("--epochs", type=int, default=12, help="classifier epochs (the best on real validation is kept)")
    p.add_argument("--epoch-choice", choices=("validation", "last"), default="validation",
                   help="keep the epoch with the best real validation ROC AUC, or the last one (a fixed schedule); a "
                   "ranking of generators that holds under both protocols does not depend on how the classifier is trained")
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-leaky", action="store_true", help="run even if splits share a patient group (warns)")


def _classifier_cfg(a: argparse.Namespace):
    from .evaluate.classifier import ClassifierConfig

    try:
        seeds = [int(s) for s in _csv_list(a.seeds) or []]
    except ValueError:
        raise CxrganError(f"--seeds {a.seeds!r}: expected integers like 0,1,2") from None
    if not seeds or a.epochs < 1:
        raise CxrganError("give at least one seed and --epochs >= 1")
    return ClassifierConfig(arch=a.arch, epochs=a.epochs, device=a.device, select_epoch=a.epoch_choice == "validation"), seeds


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="train the radiograph feature spaces (autoencoder, classifier) for evaluation")
    p.add_argument("action", choices=("train",))
    p.add_argument("--data", required=True, help="prepared real dataset (its training split is used)")
    p.add_argument("--out", help="output directory (default: the cache used by evaluate, $CXRGAN_CACHE)")
    p.add_argument("--kinds", default="autoencoder,classifier", help="which feature spaces to train")
    p.add_argument("--seed", type=int, default=0, help="seeds the feature networks' training")
    p.set_defaults(func=_cmd_features)


def _cmd_features(a: argparse.Namespace) -> int:
    from .data import PreparedDataset
    from .evaluate.extractors import ExtractorTraining, cached_dir, train_extractors

    ds = PreparedDataset.open(a.data)
    out = Path(a.out) if a.out else cached_dir(ds)
    spaces = train_extractors(ds, out, _csv_list(a.kinds) or [], ExtractorTraining(seed=a.seed), progress=not a.quiet)
    for kind, sp in spaces.items():
        print(f"{sp.ident}: {out / kind}  validation {sp.info.get('validation')}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="FD, KID, precision/recall/density/coverage, centroid study, memorization audit",
                       description="Measure a synthetic set (or a run, sampled first) against a real prepared dataset. "
                       "With --check-features, run the distortion check of the feature spaces instead.")
    p.add_argument("target", nargs="*", help="synthetic set(s) (cxrgan sample) or run directories; several are combined")
    p.add_argument("--real", required=True, help="prepared real dataset")
    p.add_argument("--out", help="output directory")
    p.add_argument("--features", default="classifier,autoencoder,randconv",
                   help="feature spaces: classifier, autoencoder, randconv, inception:PATH or an extractor directory")
    p.add_argument("--n", type=int, default=1000, help="images per class when sampling a run")
    p.add_argument("--checkpoint", default="best", help="best (default), last or a step number")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling and the metrics' subsets")
    p.add_argument("--check-features", action="store_true", help="run the distortion check of each feature space")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .studies.suite import check_features, evaluate

    if a.check_features:
        results = check_features(a.real, a.features, a.out, progress=not a.quiet)
        for r in results:
            print(f"{r.space}: {'passed' if r.passed else 'FAILED: ' + '; '.join(r.failures)}")
        return 0
    if not a.target or not a.out:
        raise CxrganError("evaluate needs TARGET (a synthetic set or run) and --out (or --check-features)")
    summary = evaluate(a.target, a.real, a.out, a.features, a.n, a.checkpoint, a.seed, progress=not a.quiet)
    written = ["metrics.md", "metrics.csv", "metrics.json"] + (["label_agreement.md"] if "label_agreement" in summary else []) \
        + (["centroids.png"] if "centroids" in summary else []) + ["closest_pairs.png"]
    print(f"wrote {a.out}/" + ", ".join(written))
    return 0


def _add_tstr(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tstr", help="train a classifier on synthetic images, test it on real ones (beside TRTR)")
    p.add_argument("--synthetic", required=True, nargs="+", help="synthetic set(s) (cxrgan sample) with real class names; several are combined; "
                   "resized to the real data's size when theirs differs")
    p.add_argument("--real", required=True, help="prepared real dataset (val picks epoch and threshold; test is reported)")
    p.add_argument("--out", required=True)
    _classifier_args(p)
    _shift_args(p)
    p.add_argument("--reference", metavar="TSTR_OUT", help="reuse the TRTR arm of an earlier tstr (its --out folder) "
                   "instead of training it again; refused unless it used the same real data, classifier settings, seeds "
                   "and test conditions (comparing several generators under one classifier)")
    p.set_defaults(func=_cmd_tstr)


def _cmd_tstr(a: argparse.Namespace) -> int:
    from .studies.usefulness import tstr

    cfg, seeds = _classifier_cfg(a)
    tstr(a.synthetic, a.real, a.out, cfg, seeds, a.allow_leaky, progress=not a.quiet, shifts=a.shifts, test_data=a.test_data,
         reference=a.reference)
    return 0


def _add_augment_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("augment-study", help="the BR/BG/IR/RS/GS augmentation study with synthetic images")
    p.add_argument("--real", required=True)
    p.add_argument("--synthetic", nargs="+", help="one or more synthetic sets (resized to the real data's size when theirs differs)")
    p.add_argument("--out", help="output directory of the study")
    p.add_argument("--minority-fraction", type=float, default=1.0, help="keep this fraction of the smallest class's training images")
    p.add_argument("--synthetic-ratio", default="1", help="GS arms: synthetic images as multiples of the real training set, e.g. 0.25,0.5,1,2")
    p.add_argument("--write-imbalanced", metavar="DIR", help="only write the real dataset with the minority cut applied "
                   "(train the generators for BG/GS on it), print how many synthetic images of each class the arms "
                   "take, then exit")
    p.add_argument("--reference", metavar="EARLIER_OUT", help="reuse the real-data arms (BR, IR, RS) of an earlier "
                   "augment-study --out instead of training them again (they are the same for every generator); refused "
                   "unless it used the same real data, minority cut, classifier settings, seeds and test conditions")
    _classifier_args(p)
    _shift_args(p)
    p.set_defaults(func=_cmd_augment_study)


def _cmd_augment_study(a: argparse.Namespace) -> int:
    from .data.summary import info_text
    from .studies.usefulness import augment_study, synthetic_to_sample, write_imbalanced

    try:
        ratios = [float(r) for r in _csv_list(a.synthetic_ratio) or []]
    except ValueError:
        raise CxrganError(f"--synthetic-ratio {a.synthetic_ratio!r}: expected numbers like 0.25,0.5,1,2") from None
    if a.write_imbalanced:
        ds = write_imbalanced(a.real, a.minority_fraction, a.write_imbalanced)
        print(info_text(ds))
        print("synthetic images the study's arms take (GS at --synthetic-ratio " + ",".join(f"{r:g}" for r in ratios)
              + "), per class: " + ", ".join(f"{n} {k}" for n, k in synthetic_to_sample(ds, ratios).items())
              + "; sample at least that many of each class so that no image repeats")
        return 0
    if not a.synthetic or not a.out:
        raise CxrganError("augment-study needs --synthetic SYNTH... and --out DIR (or --write-imbalanced DIR)")
    cfg, seeds = _classifier_cfg(a)
    augment_study(a.real, a.synthetic, a.out, a.minority_fraction, ratios, cfg, seeds, a.allow_leaky, progress=not a.quiet,
                  shifts=a.shifts, test_data=a.test_data, reference=a.reference)
    return 0


def _add_cluster_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster-split", help="hold one acquisition cluster out: a dataset whose test split is images "
                       "acquired unlike every training image",
                       description="Clusters the images by acquisition properties (intensity statistics, sharpness, noise, "
                       "field of view, collimation; each class's mean removed, so every cluster holds every class), drops one "
                       "cluster's training and validation images and keeps only its test images as the test split. Train "
                       "generators, classifiers and the dgm on the result as usual. Writes the dataset with "
                       "cluster_split.json and clusters.png inside.")
    p.add_argument("--data", required=True, help="prepared dataset")
    p.add_argument("--out", required=True, help="the new prepared dataset")
    p.add_argument("--clusters", type=int, default=4, help="number of acquisition clusters (k-means)")
    p.add_argument("--hold-out", type=int, default=None, metavar="K",
                   help="the cluster to hold out (default: the most atypical one with 20 test images of every class)")
    p.add_argument("--seed", type=int, default=0, help="seeds the clustering")
    p.add_argument("--site-out", metavar="DIR", help="also write the held-out cluster's dropped training and validation "
                   "images as a dataset (other patients of that cluster: for anomaly --site-normals)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_cluster_split)


def _cmd_cluster_split(a: argparse.Namespace) -> int:
    from .data import PreparedDataset
    from .data.summary import info_text
    from .evaluate.shift import cluster_split

    s = cluster_split(a.data, a.out, a.clusters, a.hold_out, a.seed, overwrite=a.overwrite, site_out=a.site_out)
    print(info_text(PreparedDataset.open(a.out)))
    print(f"held out cluster {s['held_out']} of {s['clusters']} ({s['chosen_by']}); profiles in {a.out}/cluster_split.json, "
          f"examples in {a.out}/clusters.png" + (f"; its {s['site_images']} dropped images in {a.site_out}" if a.site_out else ""))
    return 0


# --------------------------------------------------------------------------------------------- app
def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a local web app over trained runs: generate, steer codes, decompose uploads",
                       description="Serve a Gradio page over the runs under the given folders (run directories, or folders "
                       "holding them such as the demo's): Generate (class, seeds, truncation, semicond code sliders, a ddpm "
                       "run's sampling steps, a zip in sample's format), Decompose (PNG, JPEG or DICOM uploads through a dgm run, scored against its "
                       "validation threshold) and Runs (each run's summary). It binds 127.0.0.1 and sends nothing off the "
                       "machine. A research tool, not a diagnosis.")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_FOLDER")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 opens it to the network, with no login)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted, in MB (default 20)")
    p.add_argument("--device", default="cpu", help="where the networks run (default cpu; auto picks a GPU)")
    p.set_defaults(func=_cmd_app)


def _cmd_app(a: argparse.Namespace) -> int:
    from .app.page import serve
    from .runtime.execution import pick_device

    if not 0 < a.port < 65536:
        raise CxrganError(f"--port must be from 1 to 65535, got {a.port}")
    if a.max_upload_mb <= 0:
        raise CxrganError(f"--max-upload-mb must be positive, got {a.max_upload_mb}")
    serve(a.paths, a.host, a.port, a.max_upload_mb, str(pick_device(a.device)))
    return 0


# --------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole system on the embedded phantom data, ending in an HTML report (the README's first command)",
                       description="prepare phantoms, train DCGAN, CGAN and DGM, sample, evaluate, TSTR, anomaly detection, "
                       "decomposition, compare, and write OUT/report.html. Finished stages are reused when run again.")
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--size", type=int, help="image size (default 64)")
    p.add_argument("--count", type=int, help="phantoms to generate (default 1200)")
    p.add_argument("--steps", type=int, help="training steps of every family (default: dcgan 600, cgan 600, dgm 400)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="training precision (default auto)")
    p.add_argument("--quick", action="store_true", help="a shortened demo (32 px, tens of steps) to check the set-up in about a minute")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from .demo import DemoConfig, run_demo

    cfg = DemoConfig.quick() if a.quick else DemoConfig()
    if a.size:
        cfg = replace(cfg, size=a.size)
    if a.count:
        cfg = replace(cfg, count=a.count)
    if a.steps:
        cfg = replace(cfg, steps={k: a.steps for k in cfg.steps})
    if a.precision:
        cfg = replace(cfg, precision=a.precision)
    return 0 if run_demo(Path(a.out), cfg, quiet=a.quiet) is not None else 130


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_prepare, _add_info, _add_preview, _add_train, _add_sample, _add_traverse, _add_decompose, _add_anomaly, _add_compare, _add_report, _add_bench, _add_features, _add_evaluate, _add_tstr,
    _add_augment_study, _add_cluster_split, _add_app, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxrgan", description="GANs for chest X-ray synthesis, augmentation and decomposition.")
    parser.add_argument("--version", action="version", version=f"cxrgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; plain log lines")
    # The global flags work after the verb too (``cxrgan train ... --quiet``).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plain_add = sub.add_parser
    sub.add_parser = lambda *a, **k: plain_add(*a, parents=[common], **k)  # type: ignore[method-assign]
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cxrgan`` console script; returns the exit status."""
    return _leave(_main(argv))


def _leave(code: int) -> int:
    """A process that torchrun started leaves with ``os._exit`` once the command has returned (its files are
    written and closed, its process group destroyed): at interpreter shutdown, gloo's worker threads can abort
    the process ("terminate called without an active exception", exit -6; seen about once in three full test
    runs on 2 cores, in the process that was not rank 0), and torchrun then reports a run that finished as
    failed. Elsewhere it returns ``code``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # runtime.distributed.launched(), without importing torch here
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["CXRGAN_DEBUG"] = "1"  # decoders' own messages too (see data.decode.quiet_decoders)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CxrganError as exc:
        if args.debug:
            raise
        print(f"cxrgan: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"cxrgan: error: the disk is full{where}. Nothing finished was changed: the previous checkpoint, dataset "
              "or synthetic set is intact and this run's partial files were removed. Free some space (or choose "
              "another --out) and run the same command again (training: add --resume).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrgan: interrupted", file=sys.stderr)
        return 130
