"""Long runs on real radiographs: does every family keep its diversity at its own defaults?

Trains each family on ``../shared/data/cxr_real_64.npz`` for a long budget (default 50 epochs, the GAN comparison's)
with the family's defaults (``cxrgan/configs/FAMILY.yaml`` where one exists), then writes into ``--results``:

- ``curves.png``: FD, diversity ratio, within-class diversity ratio and Vendi ratio (worst class for conditional
  families) of every family against epochs, with the 0.8 target and the run's collapse threshold;
- ``summary.md`` / ``summary.csv``: final and best (the run's own selection rule) FD and diversity ratio, the
  lowest diversity ratio from step 1,000 on and the first step from which it stays at 0.8 or more, the final and lowest Vendi ratio (distinct samples over real's), the parts of the diversity figure that the monitor logs in a classifier
  space (``cxrgan.train.quality``): the lowest within-class diversity from step 1,000 (the worst class among the
  samples the space's classifier puts in it, and for conditional runs also drawn for it) and the final class
  separation, with the final class coverage of unconditional runs (``benchmarks/class_coverage.py``) and the lowest
  label agreement from step 1,000 of conditional ones; wall time and throughput.

All figures are measured in the dataset's validated classifier feature space (trained and checked first when
the cache lacks it). Families run as separate ``cxrgan train`` processes, ``--parallel`` at a time, one thread
each; a run directory that exists is resumed, so an interrupted benchmark continues where it stopped.

``--variant NAME:FAMILY[:KEY=VALUE...]`` (repeatable) runs named variants instead of the families at their
defaults, e.g. ``--variant cgan-r1:cgan:loss.r1_gamma=1`` beside ``--variant cgan:cgan``: the same benchmark is
then a study of one lever at a time. ``--device cuda`` runs them on a GPU (all at once is fine there).
``--report-only --rescore`` scores every kept checkpoint of the runs again with the quality monitor as the code
builds it today (same feature space, latents, real images and seed; ``WORK/NAME.rescored.csv``, kept: delete it to
score again) and reports those
figures: finished runs re-measured after the monitor's estimator changes, without training them again. FD does
not depend on the estimator, so the largest FD difference from the run's own log is printed as a check.
``--report-only --spread K`` scores each run's first checkpoint from step 1,000 with K monitors built with other
seeds (other latents and monitor rows, same size and feature space; ``WORK/NAME.spread.json``, kept) and reports the
mean and standard deviation of their diversity ratios beside the run's own figure: how far one monitor draw can
carry a ratio near the 0.8 target. The JSON also holds each draw against its own monitor rows as the real reference
(an older monitor convention).

    python benchmarks/long_runs.py --work /tmp/long --results docs/results/long_runs [--epochs 50] [--parallel 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrgan.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "cxr_real_64.npz"
TARGET = 0.8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL), help="source to prepare, or a prepared dataset directory")
    ap.add_argument("--work", required=True, help="folder for the prepared data and the runs")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results" / "long_runs"))
    ap.add_argument("--families", default="gan,dcgan,cgan,bigan,semicond")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32, help="g_channels and d_channels (half the default width)")
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--variant", action="append", default=[], help="NAME:FAMILY[:KEY=VALUE...], instead of --families")
    ap.add_argument("--device", default="cpu", help="cpu (one thread per run) or cuda")
    ap.add_argument("--report-only", action="store_true", help="write the figure and table from the runs as they are")
    ap.add_argument("--rescore", action="store_true", help="with --report-only: score the runs' checkpoints with today's monitor")
    ap.add_argument("--spread", type=int, default=0, metavar="K",
                    help="with --report-only: score each run's checkpoint at step 1,000 with K monitors of other seeds")
    a = ap.parse_args()

    from cxrgan.data import PreparedDataset, Preprocess, prepare
    from cxrgan.evaluate.extractors import ensure_extractors
    from cxrgan.evaluate.validation import cached_check

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    if not (data / "manifest.json").is_file():
        prepared = work / "data"
        if not (prepared / "manifest.json").is_file():
            prepare(str(data), prepared, Preprocess(size=64), progress=False)
        data = prepared
    ds = PreparedDataset.open(data)
    space = ensure_extractors(ds, ["classifier"])["classifier"]
    check = cached_check(ds, space, run_if_missing=True)
    print(f"feature space {space.ident}: distortion check {'passed' if check.passed else 'FAILED'}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")

    runs = variants(a.variant) if a.variant else {f.strip(): (f.strip(), []) for f in a.families.split(",") if f.strip()}
    jobs = {name: _command(fam, data, work / name, a, extra) for name, (fam, extra) in runs.items()}
    walls = {} if a.report_only else _run_all(jobs, work, a.parallel)
    if a.rescore:
        for name in runs:
            if (work / name / "metrics.csv").is_file() and not (work / f"{name}.rescored.csv").is_file():
                rescore(work / name, work / f"{name}.rescored.csv")
    if a.spread:
        for name in runs:
            if (work / name / "metrics.csv").is_file() and not (work / f"{name}.spread.json").is_file():
                spread(work / name, work / f"{name}.spread.json", a.spread)
    _report(list(runs), work, Path(a.results), {**_saved_walls(work), **walls}, a)


def _saved_walls(work: Path) -> dict[str, float]:
    """Wall seconds of the runs that finished under this benchmark (``work/walls.json``), for ``--report-only``."""
    import json

    path = work / "walls.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def variants(specs: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``NAME:FAMILY[:KEY=VALUE...]`` -> {name: (family, ["KEY=VALUE", ...])}."""
    out = {}
    for spec in specs:
        name, family, *sets = spec.split(":")
        if not name or not family or any("=" not in kv for kv in sets):
            raise SystemExit(f"--variant {spec!r}: use NAME:FAMILY[:KEY=VALUE...]")
        out[name] = (family, sets)
    return out


def _command(family: str, data: Path, out: Path, a: argparse.Namespace, extra: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "cxrgan", "--quiet", "train", "--model", family, "--data", str(data), "--out", str(out),
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--device", a.device,
           "--set", f"model.g_channels={a.channels}", "--set", f"model.d_channels={a.channels}",
           "--set", f"ckpt_every={a.ckpt_every}", "--set", "keep_checkpoints=40"]
    for o in [*a.overrides, *extra]:
        cmd += ["--set", o]
    if (out / "config.yaml").is_file():
        cmd = [c for c in cmd if c not in ("--model", family)] + ["--resume"]
        cmd = _drop_flag(cmd, "--data")
    return cmd


def _drop_flag(cmd: list[str], flag: str) -> list[str]:
    i = cmd.index(flag)
    return cmd[:i] + cmd[i + 2:]


def _run_all(jobs: dict[str, list[str]], work: Path, parallel: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, walls = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            fam = pending.pop(0)
            log = open(work / f"{fam}.log", "a")
            running[fam] = (subprocess.Popen(jobs[fam], stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), log)
            print(f"started {fam}: {' '.join(jobs[fam])}", flush=True)
        time.sleep(5)
        for fam, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                walls[fam] = time.time() - t0
                log.close()
                if proc.returncode == 0:
                    write_json_atomic(work / "walls.json", {**_saved_walls(work), fam: walls[fam]})
                del running[fam]
                print(f"{fam} finished (exit {proc.returncode}) in {walls[fam] / 60:.1f} min", flush=True)
    return walls


@torch.no_grad()
def rescore(run: Path, out: Path) -> None:
    """Score every kept checkpoint of ``run`` with the run's quality monitor as the code builds it today and write
    the figures to ``out`` (CSV, one row per step, the columns of the run's own evaluation rows)."""
    import csv

    from cxrgan.sample import load_run, run_monitor
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.metrics import read_metrics

    _, mon = run_monitor(load_run(run, "last"))  # one monitor for every checkpoint: its real figures are computed once
    logged = {int(r["step"]): float(r["fd"]) for r in read_metrics(run / "metrics.csv") if r.get("fd")}
    rows = []
    for step in ckpt.list_checkpoints(run):
        loaded = load_run(run, step)
        figures = mon.evaluate(lambda z, y, fam=loaded.family: fam.generate(z, y).float())
        rows.append({"step": step, **{k: v for k, v in figures.items() if not isinstance(v, str)}})
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    gaps = [abs(r["fd"] - logged[r["step"]]) / logged[r["step"]] for r in rows if r["step"] in logged]
    print(f"{run.name}: {len(rows)} checkpoints re-scored; FD against the run's log: largest relative difference "
          f"{max(gaps, default=float('nan')):.2%}", flush=True)


@torch.no_grad()
def spread(run: Path, out: Path, draws: int, at: int = 1000) -> None:
    """Score ``run``'s first kept checkpoint from step ``at`` with ``draws`` quality monitors built as the run's own
    but with other seeds (the run's seed + 1000 k: other latents and other monitor rows, same number and feature
    space) and write their diversity ratios to ``out`` (JSON: step, own seed's ratio, the others'). Each draw is
    scored twice: against today's real reference (every training image) and against its own monitor rows (the
    reference of an older monitor convention), so the share of the spread that the reference caused shows."""
    from cxrgan.sample import load_run, run_monitor
    from cxrgan.train import checkpoint as ckpt
    from cxrgan.train.quality import QualityMonitor, diversity_ratio

    kept = [s for s in ckpt.list_checkpoints(run) if s >= at]
    if not kept:
        return
    loaded = load_run(run, kept[0])
    data, own = run_monitor(loaded)
    generate = lambda z, y: loaded.family.generate(z, y).float()  # noqa: E731
    ratios, own_rows = [], []
    for k in range(1, draws + 1):
        build = lambda **kw: QualityMonitor(data, loaded.cfg.eval_samples, loaded.family.sample_z,  # noqa: E731
                                            loaded.cfg.seed + 1000 * k, own.device, own.space, loaded.family.conditional, **kw)
        mon, old = build(), build(reference_max=0)  # the same latents and rows; only the real reference differs
        fakes = mon.samples(generate)
        ratios.append(diversity_ratio(mon.score(fakes)))
        own_rows.append(diversity_ratio(old.score(fakes)))
    own_ratio = diversity_ratio(own.evaluate(generate))
    write_json_atomic(out, {"step": kept[0], "own": own_ratio, "others": ratios, "others_own_rows": own_rows})
    sd = lambda v: np.std(v, ddof=1) if draws > 1 else 0.0  # noqa: E731
    print(f"{run.name}: diversity at step {kept[0]}: {own_ratio:.3f} with the run's monitor, {np.mean(ratios):.3f} +- "
          f"{sd(ratios):.3f} over {draws} others ({np.mean(own_rows):.3f} +- {sd(own_rows):.3f} against each one's own "
          "monitor rows)", flush=True)


def holds_from(steps: np.ndarray, ratios: np.ndarray, target: float = TARGET) -> int | None:
    """The first evaluated step from which every later ratio is at least ``target`` (None: the last one is below)."""
    below = np.flatnonzero(ratios < target)
    if not len(below):
        return int(steps[0])
    return int(steps[below[-1] + 1]) if below[-1] + 1 < len(steps) else None


def _spread_columns(path: Path) -> dict[str, float | None]:
    """The ``--spread`` columns of one run (none where it was not measured)."""
    import json

    keys = ("diversity at step 1000, other monitor draws", "their sd")
    if not path.is_file():
        return dict.fromkeys(keys)
    others = np.array(json.loads(path.read_text())["others"])
    return dict(zip(keys, (float(others.mean()), float(others.std(ddof=1)) if len(others) > 1 else None)))


def _report(names: list[str], work: Path, results: Path, walls: dict[str, float], a: argparse.Namespace) -> None:
    import json

    from cxrgan.report.plots import _plt
    from cxrgan.report.tables import write_table
    from cxrgan.train.metrics import read_metrics
    from cxrgan.train.quality import diversity_ratio
    from cxrgan.train.rundir import read_run

    results.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    fig, (ax_fd, ax_div, ax_within, ax_vendi, ax_recall) = plt.subplots(1, 5, figsize=(26, 3.8))
    rows = []
    for i, fam in enumerate(names):
        run = work / fam
        if not (run / "metrics.csv").is_file():
            continue
        cfg, info = read_run(run)
        metrics = read_metrics(run / "metrics.csv")
        rescored = work / f"{fam}.rescored.csv"
        evals = read_metrics(rescored) if a.rescore and rescored.is_file() else [r for r in metrics if r.get("fd")]
        if not evals:
            continue
        steps_per_epoch = max(1, int(info["train_images"]) // cfg.batch_size)
        step = np.array([float(r["step"]) for r in evals])
        fd = np.array([float(r["fd"]) for r in evals])
        div = np.array([diversity_ratio(r) for r in evals])
        vendi = np.array([float(r["vendi_ratio"]) if r.get("vendi_ratio") else np.nan for r in evals])  # older runs: none
        recall = np.array([float(r["recall"]) if r.get("recall") else np.nan for r in evals])  # older runs logged none
        style = {"marker": "o", "ms": 2.5, "color": f"C{i % 10}", "ls": "-" if i < 10 else "--", "label": fam}
        ax_fd.plot(step / steps_per_epoch, fd, **style)
        ax_div.plot(step / steps_per_epoch, div, **style)
        ax_vendi.plot(step / steps_per_epoch, vendi, **style)
        ax_recall.plot(step / steps_per_epoch, recall, **style)
        within = np.array([float(r["class_within_ratio"]) if r.get("class_within_ratio") else np.nan for r in evals])
        ax_within.plot(step / steps_per_epoch, within, **style)  # older runs' logs: none (re-score them)
        best_file = run / "checkpoints" / "best.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else {}
        late, late_vendi, late_within, late_recall = div[step >= 1000], vendi[step >= 1000], within[step >= 1000], recall[step >= 1000]
        agree = [float(r["label_agreement"]) for r, at in zip(evals, step) if at >= 1000 and r.get("label_agreement")]
        speeds = [float(r["img_per_s"]) for r in metrics if r.get("img_per_s")]
        rows.append({
            "run": fam, "family": cfg.model.family, "steps": int(step[-1]), "epochs": round(step[-1] / steps_per_epoch, 1),
            "final FD": float(fd[-1]), "final diversity": float(div[-1]),
            "final class coverage": float(evals[-1]["class_coverage"]) if evals[-1].get("class_coverage") else None,
            "min diversity from step 1000": float(late.min()) if len(late) else None,
            "held >= 0.8": bool(len(late) and late.min() >= TARGET),
            "holds 0.8 from step": holds_from(step, div),
            "min within-class diversity from step 1000": float(np.nanmin(late_within)) if np.isfinite(late_within).any() else None,
            "final class separation": float(evals[-1]["class_separation"]) if evals[-1].get("class_separation") else None,
            "min label agreement from step 1000": min(agree) if agree else None,
            "final Vendi ratio": None if np.isnan(vendi[-1]) else float(vendi[-1]),
            "min Vendi ratio from step 1000": float(np.nanmin(late_vendi)) if np.isfinite(late_vendi).any() else None,
            "recall at step 1000": float(recall[step >= 1000][0]) if np.isfinite(late_recall).any() else None,
            "final recall": None if np.isnan(recall[-1]) else float(recall[-1]),
            **_spread_columns(work / f"{fam}.spread.json"),
            "best step": best.get("step"), "best FD": best.get("fd"), "best diversity": best.get("diversity_ratio"),
            "img/s": float(np.median(speeds)) if speeds else None,
            "wall min": round(walls[fam] / 60, 1) if fam in walls else None,
        })
    ax_fd.set_yscale("log")
    ax_fd.set_title("FD to real training images (classifier space)")
    ax_div.axhline(TARGET, color="grey", ls="--", lw=0.8, label="target 0.8")
    ax_div.axhline(0.5, color="red", ls=":", lw=0.8, label="collapse threshold")
    ax_div.set_title("diversity / real diversity (worst class)")
    ax_within.axhline(TARGET, color="grey", ls="--", lw=0.8, label="target 0.8")
    ax_within.set_title("within-class diversity / real (worst class,\nsamples the classifier puts in their class)", fontsize=10)
    ax_within.set_ylim(0.3, 1.4)  # the fully connected gan's noise reads up to 2.2 early; the target is what matters here
    ax_vendi.axhline(0.5, color="red", ls=":", lw=0.8, label="collapse threshold")
    ax_vendi.set_title("distinct samples (Vendi) / real (worst class)")
    ax_recall.set_title("recall (share of real images inside\nthe samples' neighbourhoods, k = 5)", fontsize=10)
    for ax in (ax_fd, ax_div, ax_within, ax_vendi, ax_recall):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(*ax_div.get_legend_handles_labels(), loc="center right", fontsize=8)  # one legend: the runs and lines
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(results / "curves.png", dpi=110)
    where = (torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "one CPU thread per run") + \
        f", CPU capability {torch.backends.cpu.get_cpu_capability()}"
    caption = (f"{a.epochs} epochs, batch {a.batch_size}, width {a.channels}, "
               f"{'each family at its defaults' if not a.variant else 'variants as named'}, {where}. Diversity: mean pairwise distance of "
               "samples in the validated classifier space over the same figure for real images, per class for "
               "conditional families (the worst class is shown). Vendi ratio: the samples' effective number of distinct images "
               "over real images' in the same space (benchmarks/diversity_measures.py). Recall: Kynkaanniemi et al.'s, all "
               "samples against the monitor's real images; it falls when samples leave part of the real images uncovered, "
               "which the mean distance can miss." +
               (" Every checkpoint re-scored with today's monitor (--rescore)." if a.rescore else ""))
    md = write_table(rows, list(rows[0]) if rows else ["family"], results / "summary")
    print(caption + "\n\n" + md)


if __name__ == "__main__":
    main()
