"""Synthetic images under distribution shift: do the decisions they teach hold on radiographs acquired elsewhere?

Prepares ``../shared/data/cxr_real_64.npz`` (or ``--data`` at ``--size``), trains each generator at its defaults
but for the budget, which the script sets (``--epochs``: 50, the original studies'; the cgan's and semicond's own
default is 80) (one ``cxrgan train`` process per run, ``--parallel`` at a time, one thread each; existing runs are resumed),
samples ``--n`` images per class from each run's best checkpoint, and runs ``cxrgan tstr`` with the standard shift
protocol under each classifier protocol (``--protocols``: ``ARCH:EPOCH_CHOICE``, e.g. ``small:validation`` and
``small:last``). Writes into ``--results``:

- ``summary.md`` / ``summary.csv``: per generator and protocol, TRTR and TSTR ROC AUC and balanced accuracy on the
  test split, the TSTR/TRTR ratios there and averaged over the fourteen acquisition shifts (and the worst), and
  the seed-spread ratio of ROC AUC (TSTR's standard deviation over TRTR's);
- ``GENERATOR-PROTOCOL/``: each study's ``tstr.md`` and ``shift.md``;
- per generator, also its training compute, sampling time per image, and ``cxrgan evaluate``'s per-class FD,
  precision, recall, coverage and memorization share in the dataset's classifier space; ``tstr_vs_compute.png``.

Generators: ``cgan`` (``--epochs``), ``dcgan-pair`` (a DCGAN per class, ``--pair-steps`` each), ``semicond``
(``--epochs``), all at width ``--channels``, and ``ddpm`` (the diffusion family, ``--ddpm-epochs``; its quality check draws
``--ddpm-eval-samples`` images with its full sampler every ``--ddpm-ckpt-every`` steps). Under each protocol the
real-data arm (TRTR) is trained once and reused by the other generators' studies (``cxrgan tstr --reference``).
``walls.json`` in ``--work`` keeps each run's training wall time, and the summary reports it with the sampling
time per image.

    python benchmarks/shift_tstr.py --work /tmp/shift --results docs/results/shift/synthesis
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

from cxrgan.train.metrics import read_metrics  # noqa: E402

GENERATORS = ("cgan", "dcgan-pair", "semicond", "ddpm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, REAL, ROOT / "docs" / "results" / "shift" / "synthesis")
    ap.add_argument("--generators", default=",".join(GENERATORS))
    ap.add_argument("--protocols", default="small:validation,small:last")
    ap.add_argument("--epochs", type=int, default=50, help="cgan and semicond training epochs (their default budget: 80)")
    ap.add_argument("--pair-steps", type=int, default=2000)
    ap.add_argument("--ddpm-epochs", type=int, help="training epochs of the ddpm (default: --epochs)")
    ap.add_argument("--ddpm-eval-samples", type=int, default=256)
    ap.add_argument("--ddpm-ckpt-every", type=int, default=500)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--n", type=int, default=1000, help="synthetic images per class")
    ap.add_argument("--seeds", default="0,1,2", help="classifier seeds")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--reference", help="an earlier `cxrgan tstr` output on the same real data and classifier "
                    "settings whose TRTR arm every study reuses (refused by tstr if anything differs)")
    ap.add_argument("--report-only", action="store_true", help="train nothing and run no study: tabulate what exists")
    a = ap.parse_args()
    work, results = Path(a.work), Path(a.results)
    work.mkdir(parents=True, exist_ok=True)
    data = prepared(Path(a.data), work / f"real{a.size}", a.size)
    gens = [g for g in a.generators.split(",") if g]
    runs = _runs(gens, work)
    if not a.report_only:
        # A finished run given --resume stops at once, so every run is (re)started.
        _run_all({name: _train(run, data, a) for name, run in runs.items()}, work, a.parallel)
    # protocol -> the study whose TRTR arm the others reuse: --reference, else the first measured under it
    rows, references = [], {proto: Path(a.reference) for proto in a.protocols.split(",")} if a.reference else {}
    for g in gens:
        members = [r for n, r in runs.items() if n == g or n.startswith(f"{g}-")]
        if not all((r / "checkpoints" / "last.json").is_file() for r in members):
            print(f"{g}: not trained, left out")
            continue
        synth = work / f"synthetic-{g}"
        if a.report_only and not (synth / "manifest.json").is_file():
            print(f"{g}: not sampled, left out")
            continue
        if not (synth / "manifest.json").is_file():
            run_cli(["sample", *map(str, members), "--out", str(synth), "--n", str(a.n * (1 if len(members) > 1 else 2)), "--no-png"])
        for proto in a.protocols.split(","):
            arch, choice = proto.split(":")
            out = work / f"tstr-{g}-{arch}-{choice}"
            if a.report_only and not (out / "tstr.json").is_file():
                print(f"{g} under {proto}: not measured, left out")
                continue
            if not (out / "tstr.json").is_file():
                reuse = ["--reference", str(references[proto])] if proto in references else []
                run_cli(["tstr", "--synthetic", str(synth), "--real", str(data), "--out", str(out), "--arch", arch,
                         "--epoch-choice", choice, "--seeds", a.seeds, *reuse])
            references.setdefault(proto, out)
            rows.append({**_row(g, proto, json.loads((out / "tstr.json").read_text())), **_costs(g, members, synth, work),
                         **_quality(synth, data, work / f"evaluate-{g}", a.report_only)})
            dest = results / f"{g}-{arch}-{choice}"
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("tstr.md", "shift.md"):
                shutil.copy(out / f, dest / f)
    _write(rows, results)


def _runs(gens: list[str], work: Path) -> dict[str, Path]:
    out = {}
    for g in gens:
        if g == "dcgan-pair":
            out.update({f"dcgan-pair-{c}": work / f"dcgan-pair-{c}" for c in ("NORMAL", "PNEUMONIA")})
        else:
            out[g] = work / g
    return out


def _train(run: Path, data: Path, a: argparse.Namespace) -> list[str]:
    name = run.name
    family = "dcgan" if name.startswith("dcgan-pair") else name
    if name.startswith("dcgan-pair"):
        budget = ["--classes", name.rsplit("-", 1)[1], "--steps", str(a.pair_steps)]
    elif family == "ddpm":
        budget = ["--epochs", str(a.ddpm_epochs or a.epochs), "--set", f"eval_samples={a.ddpm_eval_samples}",
                  "--set", f"ckpt_every={a.ddpm_ckpt_every}"]
    else:
        budget = ["--epochs", str(a.epochs)]
    return train_command(run, "--model", family, "--data", str(data), "--set", f"model.g_channels={a.channels}",
                         "--set", f"model.d_channels={a.channels}", "--set", "ckpt_every=250", *budget)


def _row(g: str, proto: str, s: dict) -> dict:
    arms = {r["name"]: r for r in s["rows"]}
    sm = (s.get("shift") or {}).get("summary", {})
    return {"generator": g, "protocol": proto,
            "trtr_roc_auc": arms["TRTR"]["roc_auc_mean"], "tstr_roc_auc": arms["TSTR"]["roc_auc_mean"],
            "tstr_roc_auc_std": arms["TSTR"]["roc_auc_std"], "trtr_roc_auc_std": arms["TRTR"]["roc_auc_std"],
            "trtr_balanced_accuracy": arms["TRTR"]["balanced_accuracy_mean"],
            "tstr_balanced_accuracy": arms["TSTR"]["balanced_accuracy_mean"],
            "roc_auc_ratio": s["roc_auc_ratio"], "balanced_accuracy_ratio": s["balanced_accuracy_ratio"],
            "shift_roc_auc_ratio": sm.get("roc_auc_ratio_mean"), "shift_roc_auc_ratio_worst": sm.get("roc_auc_ratio_worst"),
            "shift_balanced_accuracy_ratio": sm.get("balanced_accuracy_ratio_mean"),
            "shift_balanced_accuracy_ratio_worst": sm.get("balanced_accuracy_ratio_worst"),
            "seed_spread_ratio": sm.get("roc_auc_seed_spread_ratio")}


def _costs(g: str, members: list[Path], synth: Path, work: Path) -> dict:
    """Training compute in hours (summed over a pair's runs: each logged window's images over its img/s, so quality
    checks and pauses are left out; one thread per run), images seen, and the sampling time per image that
    ``cxrgan sample`` recorded."""
    seconds, kimg = 0.0, 0.0
    for r in members:
        rows = [x for x in read_metrics(r / "metrics.csv") if x.get("img_per_s")]
        prev = 0.0
        for x in rows:
            seconds += (float(x["kimg"]) - prev) * 1000 / float(x["img_per_s"])
            prev = float(x["kimg"])
        kimg += prev
    src = json.loads((synth / "manifest.json").read_text()).get("source", {})
    return {"train_hours": seconds / 3600, "train_kimg": kimg,
            "sample_ms_per_image": None if src.get("seconds_per_image") is None else 1000 * src["seconds_per_image"]}


def _quality(synth: Path, data: Path, out: Path, report_only: bool) -> dict:
    """``cxrgan evaluate`` of the synthetic set in the dataset's classifier space: FD, precision, recall and coverage
    against the real training images of each class, averaged over the classes (a pooled figure would also count the
    balanced set's class shares against the real 26/74), and the memorization audit's flagged share."""
    if not (out / "metrics.json").is_file():
        if report_only:
            return {}
        run_cli(["evaluate", str(synth), "--real", str(data), "--features", "classifier", "--out", str(out)])
    s = json.loads((out / "metrics.json").read_text())
    per = [r for r in s["metrics"] if r["comparison"] == "synthetic vs real train" and r["class"] != "all"
           and r["space"].startswith("classifier")]
    mem = {m["space"].split("-")[0]: m["flagged_fraction"] for m in s["memorization"]}
    mean = lambda k: float(sum(r[k] for r in per) / len(per)) if per else None  # noqa: E731
    return {"fd_per_class": mean("fd"), "precision": mean("precision"), "recall": mean("recall"),
            "coverage": mean("coverage"), "memorized_pixels": mem.get("pixels"), "memorized_features": mem.get("classifier")}


def _figure(rows: list[dict], path: Path) -> None:
    """TSTR ROC AUC against training compute, one point per generator (classifier protocol ``small:validation``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["protocol"] == "small:validation" and r.get("train_hours")]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in pts:
        ax.errorbar(r["train_hours"], r["tstr_roc_auc"], yerr=r["tstr_roc_auc_std"], marker="o", capsize=3, label=r["generator"])
    ax.axhline(pts[0]["trtr_roc_auc"], color="grey", ls=":", lw=0.8, label="real training images (TRTR)")
    ax.set_xlabel("training compute (hours on one CPU thread)")
    ax.set_ylabel("TSTR ROC AUC (real test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
    _figure(rows, results / "tstr_vs_compute.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
