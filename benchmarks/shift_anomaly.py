"""Anomaly detection under distribution shift: does the DGM's figure hold on radiographs acquired elsewhere?

Prepares ``../shared/data/cxr_real_64.npz`` and its held-out acquisition cluster split (``cxrgan cluster-split``),
trains the DGM on the NORMAL training images of each (one ``cxrgan train`` process per run, ``--parallel`` at a
time, one thread each; an existing run is resumed), then scores each run with ``cxrgan anomaly`` under the
standard shift protocol and writes into ``--results``:

- ``summary.md`` / ``summary.csv``: per variant, the validation-chosen score, ROC AUC on the test split, the mean
  and the worst over the fourteen acquisition shifts, on the held-out cluster, and the same for the two
  baselines; sensitivity, specificity, accuracy and F1 at the validation threshold;
- ``shift_roc_auc.png``: ROC AUC per test condition, one line per variant;
- ``VARIANT/``: each variant's ``report.md`` and decomposition panels for the test split.

    python benchmarks/shift_anomaly.py --work /tmp/shift --results docs/results/shift/anomaly \\
        --variant default --variant pose:model.standardize=pose
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_data_arguments, prepared, run_cli  # noqa: E402  (sibling scripts)
from long_runs import REAL, ROOT, _run_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, REAL, ROOT / "docs" / "results" / "shift" / "anomaly")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE...]",
                    help="a DGM variant: its name and config overrides (default: one variant 'default' at the defaults)")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cluster", action="store_true", help="train and score on the shared split only, not on the "
                    "held-out acquisition cluster split")
    ap.add_argument("--report-only", action="store_true", help="score and report the runs that exist, train nothing")
    a = ap.parse_args()
    work, results = Path(a.work), Path(a.results)
    work.mkdir(parents=True, exist_ok=True)
    variants = _variants(a.variant or ["default"])
    tag = f"real{a.size}"
    data = {"in-distribution": prepared(Path(a.data), work / tag, a.size)}
    if not a.no_cluster:
        data["held-out cluster"] = work / f"{tag}_cluster"
    if "held-out cluster" in data and not (data["held-out cluster"] / "manifest.json").is_file():
        run_cli(["cluster-split", "--data", str(data["in-distribution"]), "--out", str(data["held-out cluster"])])
    runs = {(v, d): work / f"dgm-{v}-{'cluster' if d == 'held-out cluster' else tag}" for v in variants for d in data}
    if not a.report_only:
        jobs = {run.name: _train_command(run, data[d], variants[v], a) for (v, d), run in runs.items()
                if not (run / "checkpoints" / "last.json").is_file() or _unfinished(run, a.steps)}
        _run_all(jobs, work, a.parallel)
    rows = []
    for (v, d), run in runs.items():
        if not (run / "checkpoints" / "last.json").is_file():
            print(f"{run.name}: no checkpoint, left out")
            continue
        out = work / f"anomaly-{run.name}"
        if not (out / "anomaly.json").is_file():
            run_cli(["anomaly", str(run), "--data", str(data[d]), "--out", str(out)])
        rows += _rows(v, d, json.loads((out / "anomaly.json").read_text()))
        if d == "in-distribution":
            dest = results / v
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("report.md", "normal_judged_abnormal.png", "abnormal_judged_abnormal.png", "shift.csv"):
                shutil.copy(out / f, dest / f)
    _write(rows, results, variants, work, tag)


def _variants(specs: list[str]) -> dict[str, list[str]]:
    out = {}
    for spec in specs:
        name, *sets = spec.split(":")
        if not name or any("=" not in kv for kv in sets):
            raise SystemExit(f"--variant {spec!r}: use NAME[:KEY=VALUE...]")
        out[name] = sets
    return out


def _unfinished(run: Path, steps: int) -> bool:
    return json.loads((run / "checkpoints" / "last.json").read_text()).get("step", 0) < steps


def _train_command(run: Path, data: Path, sets: list[str], a: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "cxrgan", "--quiet", "train", "--out", str(run), "--steps", str(a.steps)]
    if (run / "config.yaml").is_file():
        return cmd + ["--resume"]
    cmd += ["--model", "dgm", "--data", str(data), "--batch-size", str(a.batch_size), "--seed", str(a.seed),
            "--set", f"model.g_channels={a.channels}", "--set", f"model.d_channels={a.channels}", "--set", "ckpt_every=200"]
    for kv in sets:
        cmd += ["--set", kv]
    return cmd


def _rows(variant: str, data: str, s: dict) -> list[dict]:
    """One row per method of one anomaly report: the test split, and for in-distribution data the shift summary."""
    out = []
    summary = (s.get("shift") or {}).get("summary", {})
    for m in s["methods"]:
        method = "dgm" if m["method"].startswith("dgm") else m["method"]
        row = {"variant": variant, "data": data, "method": method, "score": s["score"] if method == "dgm" else "",
               "step": s["checkpoint_step"], "val_roc_auc": m["val_roc_auc"], "test_roc_auc": m["roc_auc"],
               "sensitivity": m["sensitivity"], "specificity": m["specificity"], "accuracy": m.get("accuracy"), "f1": m.get("f1")}
        sm = summary.get(m["method"], {})
        row.update({"shift_mean": sm.get("acquisition_mean"), "shift_worst": sm.get("acquisition_worst"),
                    "worst_shift": sm.get("acquisition_worst_shift", "")})
        out.append(row)
    return out


def _write(rows: list[dict], results: Path, variants: dict[str, list[str]], work: Path, tag: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    cols = ["variant", "method", "score", "step", "val_roc_auc", "test_roc_auc", "shift_mean", "shift_worst", "worst_shift",
            "held_out_cluster", "sensitivity", "specificity", "accuracy", "f1"]
    table, first = [], next(iter(variants))
    for r in rows:
        if r["data"] != "in-distribution" or (r["method"] != "dgm" and r["variant"] != first):
            continue  # the baselines do not depend on the variant: once
        held = next((h for h in rows if h["data"] == "held-out cluster" and h["variant"] == r["variant"] and h["method"] == r["method"]), None)
        table.append({**r, "variant": r["variant"] if r["method"] == "dgm" else "", "step": r["step"] if r["method"] == "dgm" else "",
                      "held_out_cluster": None if held is None else held["test_roc_auc"]})
    with open(results / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(table)
    fmt = lambda v: "" if v is None or v == "" else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in table]
    md += ["", "Variants: " + "; ".join(f"`{v}`: " + (", ".join(f"`{kv}`" for kv in sets) or "the defaults")
                                        for v, sets in variants.items())]
    (results / "summary.md").write_text("\n".join(md) + "\n")
    _figure(work, variants, results / "shift_roc_auc.png", tag)
    print("\n".join(md))


def _figure(work: Path, variants: dict[str, list[str]], path: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = None
    for v in variants:
        f = work / f"anomaly-dgm-{v}-{tag}" / "anomaly.json"
        if not f.is_file():
            continue
        shift = json.loads(f.read_text()).get("shift", {})
        key = next(k for k in shift["rows"][0] if k.startswith("dgm") and k.endswith("roc_auc"))
        names = names or [r["condition"] for r in shift["rows"]]
        ax.plot(range(len(names)), [r[key] for r in shift["rows"]], marker="o", ms=3.5, label=f"{v}: {key[:-8].strip()}")
        held = work / f"anomaly-dgm-{v}-cluster" / "anomaly.json"
        if held.is_file():
            ax.scatter([len(names)], [json.loads(held.read_text())["methods"][0]["roc_auc"]], marker="s")
    if names is None:
        return
    ax.set_xticks(range(len(names) + 1), names + ["held-out cluster"], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ROC AUC (NORMAL vs PNEUMONIA)")
    ax.set_title("DGM anomaly detection per test condition (score and thresholds chosen on validation)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
