"""``cxrgan evaluate``: every measurement of a synthetic set (or a run, sampled first) against real data.

Writes to ``OUT/``: ``metrics.csv``/``metrics.md``/``metrics.json`` (FD, KID, precision, recall, density and
coverage per feature space, overall and per class, each beside its real-versus-real references: two disjoint
halves of the real training split, and train vs test), ``centroids.png``/``centroids.csv`` (the centroid
study in the autoencoder latent), ``memorization.json``/``closest_pairs.png`` (the memorization audit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..report.evalplots import centroid_boxplots, closest_pairs
from ..report.tables import write_table
from ..utils.io import write_json_atomic
from ..evaluate.centroids import centroid_study
from ..evaluate.distribution import compare
from ..evaluate.extractors import FeatureSpace, resolve_spaces
from ..evaluate.memorization import memorization_audit
from ..evaluate.validation import cached_check

METRIC_COLUMNS = ["space", "validated", "comparison", "class", "n_a", "n_b", "fd", "kid", "kid_std", "precision",
                  "recall", "density", "coverage"]


@dataclass
class SyntheticSet:
    """Synthetic images ``(N, S, S)`` uint8 with class names per image (``UNLABELLED`` when unconditional)."""

    images: np.ndarray
    classes: np.ndarray
    source: str


def load_synthetic(target: str | Path, out: Path | None = None, n: int = 1000, checkpoint: str = "best", seed: int = 0) -> SyntheticSet:
    """A synthetic set from a directory written by ``sample``, or from a run directory (``n`` per class is
    sampled into ``out/synthetic`` first)."""
    p = Path(target)
    if not p.exists():
        raise CxrganError(f"{p} does not exist; give a run directory (cxrgan train) or a synthetic set (cxrgan sample)")
    if (p / "config.yaml").is_file() and (p / "run.json").is_file():
        from ..sample import sample

        dest = (out or p) / "synthetic"
        ds = PreparedDataset.open(dest) if (dest / "manifest.json").is_file() else sample([p], dest, n=n, seed=seed, checkpoint=checkpoint, png=False)
    else:
        ds = PreparedDataset.open(p)
    names = np.asarray(ds.class_names)
    labels = np.asarray(ds.labels)
    if ds.multilabel:
        raise CxrganError(f"{ds.root} is multi-label; evaluate a single-label synthetic set")
    return SyntheticSet(np.asarray(ds.images), names[labels], str(ds.root))


def match_classes(synth: SyntheticSet, real: PreparedDataset) -> dict[str, int]:
    """Synthetic class name -> real class index (case-insensitive); unmatched names are left out."""
    out = {}
    for c in set(synth.classes.tolist()):
        for i, r in enumerate(real.class_names):
            if c.lower() == r.lower():
                out[c] = i
    return out


def distribution_rows(space: FeatureSpace, validated: str, real_tr: np.ndarray, real_te: np.ndarray, y_tr: np.ndarray,
                      y_te: np.ndarray, synth: np.ndarray, synth_y: np.ndarray | None, class_names: Sequence[str],
                      seed: int = 0) -> list[dict[str, Any]]:
    """Metrics of the synthetic features against real training features, overall and per class, each with
    the real-vs-real references (disjoint training halves; train vs test)."""
    rng = np.random.default_rng(seed)
    rows = []
    groups = [("all", np.ones(len(real_tr), bool), np.ones(len(real_te), bool), None if synth_y is None else np.ones(len(synth), bool))]
    if synth_y is not None:
        groups += [(c, y_tr == i, y_te == i, synth_y == i) for i, c in enumerate(class_names) if (synth_y == i).any()]
    for cname, m_tr, m_te, m_sy in groups:
        tr, te = real_tr[m_tr], real_te[m_te]
        if len(tr) < 12:
            continue
        perm = rng.permutation(len(tr))
        half_a, half_b = tr[perm[: len(tr) // 2]], tr[perm[len(tr) // 2 :]]
        base = {"space": space.ident, "validated": validated, "class": cname}
        if m_sy is not None or cname == "all":
            sy = synth if m_sy is None else synth[m_sy]
            if len(sy) > 6:
                rows.append({**base, "comparison": "synthetic vs real train", **compare(tr, sy)})
        rows.append({**base, "comparison": "real train half A vs half B", **compare(half_a, half_b)})
        if len(te) > 6:
            rows.append({**base, "comparison": "real train vs real test", **compare(tr, te)})
    return rows


AGREEMENT_COLUMNS = ["space", "class", "n_synthetic", "synthetic_agreement", "n_real_test", "real_agreement", "ratio",
                     "most_confused_with", "most_confused_share"]


def label_agreement_rows(space: FeatureSpace, synth: np.ndarray, synth_y: np.ndarray, real: np.ndarray, real_y: np.ndarray,
                         class_names: Sequence[str]) -> list[dict[str, Any]]:
    """How often a classifier space's own classifier (trained on the real training images) puts a synthetic image in
    the class it was drawn for, per class, beside how often it puts a real test image in its labelled class. A
    conditional generator whose minority class looks like the majority shows here first: such images teach a
    classifier the wrong class when they are added to real data. ``[]`` for a space without a class head."""
    pred_s, pred_r = space.classify_u8(synth), space.classify_u8(real)
    if pred_s is None or pred_r is None:
        return []
    rows = []
    for i, c in enumerate(class_names):
        ms, mr = synth_y == i, real_y == i
        if not ms.any():
            continue
        agree = float(np.mean(pred_s[ms] == i))
        real_agree = float(np.mean(pred_r[mr] == i)) if mr.any() else float("nan")
        other = np.bincount(pred_s[ms][pred_s[ms] != i], minlength=len(class_names))
        worst = int(np.argmax(other))
        rows.append({"space": space.ident, "class": c, "n_synthetic": int(ms.sum()), "synthetic_agreement": agree,
                     "n_real_test": int(mr.sum()), "real_agreement": real_agree,
                     "ratio": agree / real_agree if real_agree > 0 else float("nan"),
                     "most_confused_with": class_names[worst] if other[worst] else "",
                     "most_confused_share": float(other[worst] / ms.sum())})
    return rows


def load_targets(targets: Sequence[str | Path], out: Path, n: int, checkpoint: str, seed: int) -> SyntheticSet:
    """One or several synthetic sets or runs (for example a per-class pair) as one synthetic set."""
    sets = [load_synthetic(t, out / (f"target{i}" if len(targets) > 1 else ""), n, checkpoint, seed) for i, t in enumerate(targets)]
    if len({s.images.shape[1:] for s in sets}) > 1:
        raise CxrganError("the synthetic sets have different image sizes; evaluate sets of one size together")
    return SyntheticSet(np.concatenate([s.images for s in sets]), np.concatenate([s.classes for s in sets]),
                        ",".join(s.source for s in sets))


def evaluate(target: str | Path | Sequence[str | Path], real: str | Path, out: str | Path, features: str = "classifier,autoencoder,randconv",
             n: int = 1000, checkpoint: str = "best", seed: int = 0, max_real: int = 10000, progress: bool = True) -> dict[str, Any]:
    """Run every measurement of ``target`` (a synthetic set or a run, or several combined) against ``real``.

    Returns the summary that is also written to ``out/metrics.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = PreparedDataset.open(real)
    if ds.multilabel:
        raise CxrganError(f"{ds.root} is multi-label; evaluate against a single-label dataset")
    targets = [target] if isinstance(target, (str, Path)) else list(target)
    synth = load_targets(targets, out, n, checkpoint, seed)
    if synth.images.shape[-1] != ds.size:
        raise CxrganError(f"synthetic images are {synth.images.shape[-1]} px but {ds.root} is {ds.size} px; prepare the real data at the same size")
    rng = np.random.default_rng(seed)
    tr, va, te = (ds.indices(s) for s in ("train", "val", "test"))
    tr = np.sort(rng.choice(tr, size=min(max_real, len(tr)), replace=False))
    x_tr, x_va, x_te = (np.asarray(ds.images[i]) for i in (tr, va, te))
    labels = np.asarray(ds.labels)
    y_tr, y_te = labels[tr], labels[te]
    mapping = match_classes(synth, ds)
    synth_y = np.array([mapping.get(c, -1) for c in synth.classes]) if mapping else None
    spaces = resolve_spaces(features, ds, progress)
    rows: list[dict[str, Any]] = []
    agreement: list[dict[str, Any]] = []
    feats: dict[str, dict[str, np.ndarray]] = {}
    for space in spaces:
        check = cached_check(ds, space, run_if_missing=False)
        validated = "not checked" if check is None else ("passed" if check.passed else "failed")
        f = {"train": space.embed_u8(x_tr), "test": space.embed_u8(x_te), "val": space.embed_u8(x_va), "synth": space.embed_u8(synth.images)}
        feats[space.ident] = f
        rows += distribution_rows(space, validated, f["train"], f["test"], y_tr, y_te, f["synth"], synth_y, ds.class_names, seed)
        if synth_y is not None:
            agreement += label_agreement_rows(space, synth.images, synth_y, x_te, y_te, ds.class_names)
        if progress:
            print(f"  {space.ident}: distribution metrics done", flush=True)
    md = write_table(rows, METRIC_COLUMNS, out / "metrics")
    summary: dict[str, Any] = {"target": [str(t) for t in targets], "synthetic": synth.source, "real": str(ds.root), "real_manifest_sha256": ds.manifest_hash,
                               "spaces": [s.ident for s in spaces], "metrics": rows}
    if agreement:
        agreement_md = write_table(agreement, AGREEMENT_COLUMNS, out / "label_agreement")
        summary["label_agreement"] = agreement
    ae = next((s for s in spaces if s.kind == "autoencoder"), None)
    if ae is not None and mapping:
        f = feats[ae.ident]
        study = centroid_study({c: f["synth"][synth.classes == c] for c in mapping},
                               {c: f["train"][y_tr == i] for i, c in enumerate(ds.class_names) if (y_tr == i).sum() >= 4}, seed=seed)
        centroid_boxplots(study, out / "centroids.png", ae.ident)
        write_table(study.rows(), ["set", "class", "real_class", "n", "draws", "median", "q1", "q3", "mean"], out / "centroids")
        summary["centroids"] = {"space": ae.ident, "n": study.n, "draws": study.draws, "nearest_is_own_class": study.nearest_is_own_class()}
    audit = memorization_audit(synth.images, x_tr, x_va, {k: (v["synth"], v["train"], v["val"]) for k, v in feats.items()})
    closest_pairs(synth.images, x_tr, audit.closest(8), out / "closest_pairs.png")
    summary["memorization"] = [s.summary() for s in audit.spaces]
    write_json_atomic(out / "metrics.json", summary)
    if progress:
        print(md)
        if agreement:
            print("label agreement: how often the real-trained classifier puts an image in the class it was drawn for "
                  "(synthetic) or labelled (real test)\n" + agreement_md)
        for s in summary["memorization"]:
            print(f"memorization ({s['space']}): {s['flagged_fraction']:.2%} of synthetic images closer to a training image "
                  f"than 99% of real held-out images (held-out reference: {s['reference_fraction']:.2%})")
    return summary


def check_features(real: str | Path, features: str, out: str | Path | None = None, progress: bool = True) -> list:
    """The distortion check of each space in ``features`` on ``real``; tables printed and cached."""
    ds = PreparedDataset.open(real)
    results = []
    for space in resolve_spaces(features, ds, progress):
        res = cached_check(ds, space)
        results.append(res)
        if progress:
            print(res.table(), flush=True)
        if out:
            write_table(res.rows, ["distortion", "strength", "fd", "kid", "precision", "recall", "density", "coverage"],
                        Path(out) / f"check-{space.ident}")
    if out:
        write_json_atomic(Path(out) / "check.json", {r.space: {"passed": r.passed, "failures": r.failures} for r in results})
    return results
