"""The two classifier studies: TSTR (train on synthetic, test on real) and the augmentation study.

Both train the reusable classifier (:mod:`.classifier`) for several seeds, choose the epoch and the decision
threshold on the *real* validation split and report the *real* test split, with mean and standard deviation.
Each trained classifier is also tested under the shift protocol (:mod:`.shift`): the test split under acquisition
shifts and any external test sets, with the validation threshold kept; ``shift.md``/``shift.csv`` put every arm
side by side per condition.

Augmentation study arms (Salehinejad et al.): IR, the imbalanced real training split (optionally with its
smallest class cut to ``minority_fraction`` of its images); BR, IR under-sampled to balance; RS, IR plus one
randomly rotated (+-10 degrees) and scaled (0.9-1.1) copy of each image; BG, IR topped up with synthetic
images until every class has as many as the largest; GS@r, IR plus ``r`` x |IR| synthetic images, given to
the smallest classes first (water-filling), then in proportion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.dataset import PreparedDataset
from ..data.preprocess import resize_images
from ..data.splits import leaky_groups
from ..errors import CxrganError
from ..report.evalplots import bar_chart, condition_chart, confusion_figure
from ..report.tables import write_table
from ..utils.images import to_uint8
from ..utils.io import write_json_atomic
from ..utils.tensors import to_model_range
from ..evaluate.classifier import ClassifierConfig, evaluate_classifier, random_affine, summarize_seeds, train_classifier
from ..evaluate.shift import IN_DISTRIBUTION, Condition, summarize_conditions, protocol_conditions
from .suite import load_synthetic, match_classes

log = logging.getLogger("cxrgan.studies")

STUDY_COLUMNS = ["name", "train_images", "seeds", "roc_auc_mean", "roc_auc_std", "balanced_accuracy_mean",
                 "balanced_accuracy_std", "accuracy_mean", "accuracy_std"]


def check_leaks(ds: PreparedDataset, allow_leaky: bool) -> None:
    """Refuse a dataset whose splits share a patient group (unless ``allow_leaky``, then warn loudly)."""
    n = leaky_groups(ds.items())
    if n:
        msg = (f"{ds.root}: {n} patient group(s) have images in more than one split, so a classifier can recognise "
               "patients instead of disease and every figure is inflated; prepare the data again grouped by patient")
        if not allow_leaky:
            raise CxrganError(msg + " (or pass --allow-leaky to run anyway)")
        log.warning("WARNING: %s", msg)


def _real(ds: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    idx = ds.indices(split)
    return np.asarray(ds.images[idx]), np.asarray(ds.labels)[idx].astype(np.int64)


def synthetic_by_real_class(target: str | Path, ds: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic images and their labels as indices of ``ds``'s classes; errors if a class has no match. Images of
    another size than ``ds``'s are resized to it (Lanczos, as ``prepare`` and external test sets are), so a
    generator is judged by the classifier of the data at hand whatever size it was trained at; a line says so."""
    synth = load_synthetic(target)
    mapping = match_classes(synth, ds)
    unknown = sorted(set(synth.classes.tolist()) - set(mapping))
    if unknown:
        raise CxrganError(f"synthetic set {synth.source} has class {unknown[0]!r}, which {ds.root} does not have "
                          f"({', '.join(ds.class_names)}); sample class-labelled images (per-class runs or a conditional run)")
    images = synth.images
    if images.shape[-1] != ds.size:
        log.info("synthetic set %s is %d px: resized to %d px, the size of %s", synth.source, images.shape[-1], ds.size, ds.root)
        images = resize_images(images, ds.size)
    return images, np.array([mapping[c] for c in synth.classes], np.int64)


CONDITION_KEYS = ("roc_auc", "balanced_accuracy", "accuracy")


def run_arm(name: str, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
            class_names: Sequence[str], cfg: ClassifierConfig, seeds: Sequence[int],
            say: Callable[[str], None] = lambda s: None,
            conditions: Sequence[Condition] = ()) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train and test one arm for every seed: ``(summary row, per-seed metrics)``. Each seed's classifier is also
    tested on every one of ``conditions`` (same threshold): per seed under ``conditions``, and in the row as
    ``conditions: {name: {roc_auc_mean, roc_auc_std, ...}}``."""
    per_seed = []
    for s in seeds:
        clf = train_classifier(x, y, val[0], val[1], class_names, cfg, seed=s)
        m = evaluate_classifier(clf, *test)
        shifted = {c.name: {k: evaluate_classifier(clf, c.images, c.labels)[k] for k in CONDITION_KEYS} for c in conditions}
        per_seed.append({**m, "seed": s, "threshold": clf.threshold, **({"conditions": shifted} if conditions else {})})
        say(f"  {name} seed {s}: ROC AUC {m['roc_auc']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}"
            + (f"; under {len(conditions)} shifted test sets ROC AUC {np.mean([v['roc_auc'] for v in shifted.values()]):.4f} on average"
               if conditions else ""))
    row = {"name": name, "train_images": len(y), **summarize_seeds(per_seed)}
    if conditions:
        row["conditions"] = {c.name: {f"{k}_{stat}": float(f(np.asarray([p["conditions"][c.name][k] for p in per_seed], float)))
                                      for k in CONDITION_KEYS for stat, f in (("mean", np.nanmean), ("std", np.nanstd))}
                             for c in conditions}
    return row, per_seed


SHIFT_COLUMNS = ["condition", "kind", "images"]


def shift_rows(rows: Sequence[dict[str, Any]], conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    """One row per test condition (the test split first) with every arm's ROC AUC and balanced accuracy, mean and
    standard deviation over seeds (``ARM roc_auc`` ...)."""
    out = []
    for c in conditions:
        r: dict[str, Any] = {"condition": c.name, "kind": c.kind, "images": int(len(c.labels))}
        for arm in rows:
            fig = arm if c.name == IN_DISTRIBUTION else arm.get("conditions", {}).get(c.name, {})
            for k in ("roc_auc", "balanced_accuracy"):
                r[f"{arm['name']} {k}"] = fig.get(f"{k}_mean")
                r[f"{arm['name']} {k} std"] = fig.get(f"{k}_std")
        out.append(r)
    return out


def _arm_figures(rows: Sequence[dict[str, Any]], arm: str, key: str) -> dict[str, float]:
    return {r["condition"]: r[f"{arm} {key}"] for r in rows if r.get(f"{arm} {key}") is not None}


def _write_shift(out: Path, rows: Sequence[dict[str, Any]], conditions: Sequence[Condition], title: str) -> list[dict[str, Any]]:
    """``shift.csv``/``shift.md`` and ``shift_roc_auc.png``/``shift_balanced_accuracy.png``; returns the rows."""
    table = shift_rows(rows, conditions)
    cols = SHIFT_COLUMNS + [f"{a['name']} {k}{sd}" for k in ("roc_auc", "balanced_accuracy") for a in rows for sd in ("", " std")]
    write_table(table, cols, out / "shift")
    for k in ("roc_auc", "balanced_accuracy"):
        condition_chart({a["name"]: _arm_figures(table, a["name"], k) for a in rows},
                        {a["name"]: _arm_figures(table, a["name"], f"{k} std") for a in rows}, k.replace("_", " "),
                        out / f"shift_{k}.png", f"{title}: {k.replace('_', ' ')} per test condition (mean +- std over seeds)")
    return table


def _shift_summary(table: Sequence[dict[str, Any]], arm: str, reference: str) -> dict[str, Any]:
    """``arm`` against ``reference`` under the acquisition shifts: each one's summary of ROC AUC and balanced
    accuracy, the ratios of the means and the worst ratio, and the seed-spread ratio (mean std of ``arm`` over the
    mean std of ``reference``, acquisition conditions and the test split)."""
    out: dict[str, Any] = {}
    for k in ("roc_auc", "balanced_accuracy"):
        a, r = _arm_figures(table, arm, k), _arm_figures(table, reference, k)
        out[f"{arm} {k}"], out[f"{reference} {k}"] = summarize_conditions(a), summarize_conditions(r)
        ratios = {c: a[c] / r[c] for c in a if c in r and ":" in c and not c.startswith("external ") and r[c]}
        if ratios:
            out[f"{k}_ratio_mean"] = float(np.mean(list(ratios.values())))
            worst = min(ratios, key=lambda c: ratios[c])
            out[f"{k}_ratio_worst"], out[f"{k}_ratio_worst_shift"] = ratios[worst], worst
    sa = [v for c, v in _arm_figures(table, arm, "roc_auc std").items() if not c.startswith("external ")]
    sr = [v for c, v in _arm_figures(table, reference, "roc_auc std").items() if not c.startswith("external ")]
    if sa and sr and np.mean(sr) > 0:
        out["roc_auc_seed_spread_ratio"] = float(np.mean(sa) / np.mean(sr))
    return out


def _write_study(out: Path, rows: list[dict[str, Any]], per_seed: dict[str, list], class_names: Sequence[str], stem: str, title: str,
                 extra: dict[str, Any]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    md = write_table(rows, STUDY_COLUMNS, out / stem)
    confusion_figure({r["name"]: np.asarray(r["confusion_sum"]) for r in rows}, class_names, out / "confusion.png")
    bar_chart(rows, "balanced_accuracy", out / "balanced_accuracy.png", f"{title}: balanced accuracy on the real test split")
    bar_chart(rows, "roc_auc", out / "roc_auc.png", f"{title}: ROC AUC on the real test split")
    write_json_atomic(out / f"{stem}.json", {**extra, "rows": rows, "per_seed": per_seed})
    return md


def combined_synthetic(synthetic: Sequence[str | Path], ds: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Several synthetic sets (for example one per class) as one labelled set in ``ds``'s class indices."""
    parts = [synthetic_by_real_class(s, ds) for s in synthetic]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


REAL_ARMS = {"tstr": ("TRTR",), "augment_study": ("BR", "IR", "RS")}
"""The arms of each study that see no synthetic image: the same for every generator compared under one classifier."""


def reference_key(ds: PreparedDataset, cfg: ClassifierConfig, seeds: Sequence[int], conditions: Sequence[Condition],
                  **more: Any) -> dict[str, Any]:
    """What a study's real-data arms depend on: the real dataset (its manifest hash), the classifier's configuration,
    the seeds, the test conditions (a hash of their names, images and labels) and ``more`` (the augmentation study's
    minority cut). Two calls with equal keys train the same real-data classifiers and test them on the same images."""
    h = hashlib.sha256()
    for c in conditions:
        h.update(c.name.encode())
        h.update(np.ascontiguousarray(c.images).tobytes())
        h.update(np.ascontiguousarray(c.labels, np.int64).tobytes())
    key = {"real_manifest_sha256": ds.manifest_hash, "classifier": dict(cfg.__dict__), "seeds": [int(s) for s in seeds],
           "test_conditions_sha256": h.hexdigest(), **more}
    return json.loads(json.dumps(key))  # as it reads back from the study's json (tuples become lists)


def load_reference(path: str | Path, key: dict[str, Any], stem: str = "tstr") -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The real-data arms (:data:`REAL_ARMS`) of an earlier study (its ``--out`` folder or ``STEM.json``) as
    ``{arm: (summary row, per-seed figures)}``, after checking that its :func:`reference_key` equals ``key``; one
    clear error otherwise."""
    path = Path(path)
    f = path / f"{stem}.json" if path.is_dir() else path
    verb = stem.replace("_", "-")
    what = f"pass the --out folder of an earlier `cxrgan {verb}` run on the same --real data"
    if not f.is_file():
        raise CxrganError(f"--reference {path}: no {stem}.json there; {what}")
    try:
        d = json.loads(f.read_text())
        arms = {name: (next(r for r in d["rows"] if r["name"] == name), d["per_seed"][name]) for name in REAL_ARMS[stem]}
    except (ValueError, KeyError, StopIteration, TypeError) as e:
        raise CxrganError(f"--reference {f}: not a readable {stem}.json ({type(e).__name__}: {e}); {what}") from None
    got = d.get("reference_key")
    if got is None:
        raise CxrganError(f"--reference {f} does not record what its real-data arms were measured on (an older cxrgan "
                          f"wrote it); run that {verb} again, or leave --reference out")
    labels = {"real_manifest_sha256": "real dataset", "classifier": "classifier settings (--arch, --epochs, --epoch-choice)",
              "seeds": "seeds (--seeds)", "test_conditions_sha256": "test conditions (--shifts, --test-data)",
              "minority_fraction": "minority cut (--minority-fraction)"}
    differ = [labels.get(k, k) for k in key if got.get(k) != key[k]]
    if differ:
        raise CxrganError(f"--reference {f} measured {', '.join(REAL_ARMS[stem])} with other {' and '.join(differ)} than "
                          "this call; use the same settings, or leave --reference out to train the real-data arms again")
    return arms


def tstr(synthetic: str | Path | Sequence[str | Path], real: str | Path, out: str | Path, cfg: ClassifierConfig | None = None,
         seeds: Sequence[int] = (0, 1, 2), allow_leaky: bool = False, progress: bool = True, shifts: str | None = "standard",
         test_data: Sequence[str | Path] = (), reference: str | Path | None = None) -> dict[str, Any]:
    """Train on synthetic (one set or several, combined), test on real; beside TRTR (the same classifier trained
    on the real training split). ``shifts`` and ``test_data``: the shift protocol's test conditions
    (:func:`cxrgan.evaluate.shift.protocol_conditions`; ``none`` for the test split alone). ``reference``: an
    earlier ``tstr`` output whose TRTR arm is reused instead of trained again (comparing several generators under one
    classifier), refused unless it was measured exactly as this call would (:func:`reference_key`)."""
    cfg = cfg or ClassifierConfig()
    ds = PreparedDataset.open(real)
    check_leaks(ds, allow_leaky)
    synthetic = [synthetic] if isinstance(synthetic, (str, Path)) else list(synthetic)
    xs, ys = combined_synthetic(synthetic, ds)
    say = print if progress else (lambda s: None)
    conditions = protocol_conditions(ds, shifts, test_data)
    key = reference_key(ds, cfg, seeds, conditions)
    reused = load_reference(reference, key)["TRTR"] if reference is not None else None
    val, test = _real(ds, "val"), (conditions[0].images, conditions[0].labels)
    rows, per_seed = [], {}
    for name, (x, y) in (("TRTR", _real(ds, "train")), ("TSTR", (xs, ys))):
        if name == "TRTR" and reused is not None:
            row, ps = reused
            say(f"  TRTR: reused from {reference}")
        else:
            row, ps = run_arm(name, x, y, val, test, ds.class_names, cfg, seeds, say, conditions[1:])
        rows.append(row)
        per_seed[name] = ps
    ratios = {f"{k}_ratio": rows[1][f"{k}_mean"] / rows[0][f"{k}_mean"] for k in ("roc_auc", "balanced_accuracy")}
    extra: dict[str, Any] = {"synthetic": [str(s) for s in synthetic], "real": str(ds.root), "classifier": cfg.__dict__, **ratios,
                             "reference_key": key, "trtr_reused_from": str(reference) if reused is not None else None}
    shift_note = ""
    if len(conditions) > 1:
        table = _write_shift(Path(out), rows, conditions, "TSTR vs TRTR")
        extra["shift"] = {"conditions": [c.describe() for c in conditions], "summary": _shift_summary(table, "TSTR", "TRTR")}
        sm = extra["shift"]["summary"]
        if "roc_auc_ratio_mean" in sm:
            shift_note = (f"\nunder {len(conditions) - 1 - len(test_data)} acquisition shifts, TSTR/TRTR: ROC AUC {sm['roc_auc_ratio_mean']:.3f}x "
                          f"on average (worst {sm['roc_auc_ratio_worst']:.3f}x, {sm['roc_auc_ratio_worst_shift']}), balanced accuracy "
                          f"{sm['balanced_accuracy_ratio_mean']:.3f}x (worst {sm['balanced_accuracy_ratio_worst']:.3f}x); seed spread of ROC AUC "
                          f"{sm.get('roc_auc_seed_spread_ratio', float('nan')):.2f}x TRTR's (shift.md)")
    md = _write_study(Path(out), rows, per_seed, ds.class_names, "tstr", "TSTR vs TRTR", extra)
    if progress:
        print(md + f"TSTR/TRTR: ROC AUC {ratios['roc_auc_ratio']:.3f}x, balanced accuracy {ratios['balanced_accuracy_ratio']:.3f}x"
              + shift_note)
    return {"rows": rows, **ratios, **({"shift": extra["shift"]} if "shift" in extra else {})}


def cut_minority(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a training set whose smallest class keeps only ``fraction`` of its images."""
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    minority = present[np.argmin(counts[present])]
    keep = np.ones(len(y), bool)
    rows = np.flatnonzero(y == minority)
    drop = rng.choice(rows, size=len(rows) - max(1, int(round(fraction * len(rows)))), replace=False)
    keep[drop] = False
    return np.flatnonzero(keep)


def write_imbalanced(real: str | Path, minority_fraction: float, out: str | Path, overwrite: bool = False) -> PreparedDataset:
    """The real dataset with its training split cut exactly as ``augment_study`` cuts it (validation and test
    unchanged), so the generators for BG/GS can be trained on what IR has, and nothing more."""
    from ..data.dataset import write_subset

    ds = PreparedDataset.open(real)
    tr = ds.indices("train")
    keep = cut_minority(np.asarray(ds.labels)[tr], minority_fraction, np.random.default_rng(0))
    rows = np.sort(np.concatenate([tr[keep], ds.indices("val"), ds.indices("test")]))
    return write_subset(ds, rows, out, {"kind": "imbalanced", "minority_fraction": minority_fraction}, overwrite=overwrite)


def _warn_if_generators_saw_the_cut(synthetic: Sequence[str | Path], ds: PreparedDataset) -> None:
    """With an induced imbalance, generators trained on the full dataset saw the minority images IR lost. A run
    trained on other classes only (a per-class generator of a class that is not cut) saw nothing IR lacks."""
    y = np.asarray(ds.labels)[ds.indices("train")]
    counts = np.bincount(y, minlength=len(ds.class_names))
    present = np.flatnonzero(counts)
    minority = ds.class_names[present[np.argmin(counts[present])]]
    for s in synthetic:
        try:
            runs = PreparedDataset.open(s).manifest.get("source", {}).get("runs", [])
        except CxrganError:
            continue
        if any(r.get("data_manifest_sha256") == ds.manifest_hash and minority in (_run_classes(r) or [minority])
               for r in runs):
            log.warning("WARNING: %s comes from a generator trained on %s's %s images before that class was cut, so BG "
                        "and GS see information IR does not have; train the generator on `augment-study "
                        "--write-imbalanced DIR` output for an honest comparison", s, ds.root, minority)


def _run_classes(meta: dict) -> list[str]:
    """The classes a synthetic set's source run trained on ([] = all): recorded in the set's manifest, or read from
    the run's ``run.json`` for sets sampled before it was recorded."""
    if "classes" in meta:
        return list(meta["classes"])
    try:
        return list(json.loads((Path(meta["run"]) / "run.json").read_text()).get("classes") or [])
    except (OSError, KeyError, ValueError):
        return []


def water_fill(counts: np.ndarray, extra: int) -> np.ndarray:
    """How many images to add per class: the smallest classes first until level, the rest in proportion."""
    counts = counts.astype(np.int64)
    add = np.zeros_like(counts)
    left = int(extra)
    while left > 0:
        level = counts + add
        low = np.flatnonzero(level == level.min())
        if len(low) == len(level):
            share = np.full(len(level), left // len(level))
            share[: left % len(level)] += 1
            add += share
            break
        target = np.sort(np.unique(level))[1]
        need = int((target - level[low]).sum())
        if need <= left:
            add[low] += target - level[low]
            left -= need
        else:
            share = np.full(len(low), left // len(low))
            share[: left % len(low)] += 1
            add[low] += share
            left = 0
    return add


def synthetic_needs(counts: np.ndarray, ratios: Sequence[float]) -> dict[str, np.ndarray]:
    """How many synthetic images of each class every synthetic arm takes, for training class counts ``counts``: BG
    tops each present class up to the largest, GS@r adds ``r`` x the training set by :func:`water_fill`. A set that
    holds fewer images of a class than an arm takes is drawn from with replacement, so some images repeat."""
    counts = np.asarray(counts, np.int64)
    needs = {"BG": np.where(counts > 0, counts.max() - counts, 0)}
    for r in ratios:
        needs[f"GS@{r:g}"] = water_fill(counts, int(round(r * counts.sum())))
    return needs


def most_taken(needs: dict[str, np.ndarray]) -> np.ndarray:
    """The most synthetic images of each class that any arm of :func:`synthetic_needs` takes: what a synthetic set
    must hold for no image to repeat."""
    return np.max(np.stack(list(needs.values())), axis=0)


def synthetic_to_sample(ds: PreparedDataset, ratios: Sequence[float]) -> dict[str, int]:
    """Per class, how many synthetic images the augmentation study's arms take on ``ds`` as it is (for the output of
    :func:`write_imbalanced`, the cut training split): sample at least that many of each class."""
    train = ds.manifest["counts"]["train"]
    counts = np.array([train.get(c, 0) for c in ds.class_names], np.int64)
    return dict(zip(ds.class_names, most_taken(synthetic_needs(counts, ratios)).tolist()))


def _warn_if_synthetic_repeats(needs: dict[str, np.ndarray], ys: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Warn, once per class, where an arm takes more synthetic images of a class than the sets hold; returns what the
    arms take and what the sets hold per class, for the study's record."""
    have = np.bincount(ys, minlength=len(class_names))
    most = most_taken(needs)
    for c, name in enumerate(class_names):
        if most[c] > have[c] > 0:
            arms = ", ".join(f"{arm} {int(n[c])}" for arm, n in needs.items() if n[c] > have[c])
            log.warning("WARNING: the synthetic sets hold %d %s images, fewer than the arms take (%s): their images repeat "
                        "up to %d times; sample at least %d (cxrgan sample RUN --class %s --n %d) for arms of distinct "
                        "images", have[c], name, arms, -(-int(most[c]) // int(have[c])), most[c], name, most[c])
    return {"synthetic_taken": {arm: dict(zip(class_names, n.tolist())) for arm, n in needs.items()},
            "synthetic_held": dict(zip(class_names, have.tolist()))}


def _take_synthetic(xs: np.ndarray, ys: np.ndarray, per_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for c, k in enumerate(per_class):
        pool = np.flatnonzero(ys == c)
        if k > 0 and len(pool) == 0:
            raise CxrganError(f"the synthetic sets have no image of class {c}; sample every class the study needs")
        if k > 0:
            rows.append(rng.choice(pool, size=int(k), replace=k > len(pool)))
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def rotate_scale_copies(x: np.ndarray, seed: int) -> np.ndarray:
    """One randomly rotated (+-10 degrees) and scaled (0.9-1.1) copy of each uint8 image."""
    g = torch.Generator().manual_seed(seed)
    out = random_affine(to_model_range(torch.from_numpy(x)), g, shift=0.0, degrees=10.0, scale=(0.9, 1.1), jitter=0.0)
    return to_uint8(out[:, 0].numpy())


def augment_study(real: str | Path, synthetic: Sequence[str | Path], out: str | Path, minority_fraction: float = 1.0,
                  ratios: Sequence[float] = (1.0,), cfg: ClassifierConfig | None = None, seeds: Sequence[int] = (0, 1, 2),
                  allow_leaky: bool = False, progress: bool = True, shifts: str | None = "standard",
                  test_data: Sequence[str | Path] = (), reference: str | Path | None = None) -> dict[str, Any]:
    """BR, BG, IR, RS and GS@ratio for each ratio, on the real test split and under the shift protocol's
    conditions (``shifts``, ``test_data``: see :func:`tstr`). ``reference``: an earlier ``augment_study`` output
    whose real-data arms (BR, IR, RS) are reused instead of trained again (comparing several generators under one
    classifier), refused unless it was measured exactly as this call would (:func:`reference_key`, the minority cut
    included)."""
    if not 0 < minority_fraction <= 1:
        raise CxrganError(f"--minority-fraction must be in (0, 1], got {minority_fraction}")
    if not ratios or any(r <= 0 for r in ratios):
        raise CxrganError(f"--synthetic-ratio values must be positive, got {list(ratios)}")
    cfg = cfg or ClassifierConfig()
    ds = PreparedDataset.open(real)
    check_leaks(ds, allow_leaky)
    xs, ys = combined_synthetic(synthetic, ds)
    rng = np.random.default_rng(0)
    x_all, y_all = _real(ds, "train")
    keep = cut_minority(y_all, minority_fraction, rng) if minority_fraction < 1 else np.arange(len(y_all))
    if minority_fraction < 1:
        _warn_if_generators_saw_the_cut(synthetic, ds)
    x_ir, y_ir = x_all[keep], y_all[keep]
    counts = np.bincount(y_ir, minlength=len(ds.class_names))
    present = counts > 0
    br = np.concatenate([rng.choice(np.flatnonzero(y_ir == c), size=counts[present].min(), replace=False)
                         for c in np.flatnonzero(present)])
    needs = synthetic_needs(counts, ratios)
    taken = _warn_if_synthetic_repeats(needs, ys, ds.class_names)
    bg = _take_synthetic(xs, ys, needs["BG"], rng)
    arms: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "BR": (x_ir[br], y_ir[br]),
        "BG": (np.concatenate([x_ir, xs[bg]]), np.concatenate([y_ir, ys[bg]])),
        "IR": (x_ir, y_ir),
        "RS": (np.concatenate([x_ir, rotate_scale_copies(x_ir, 0)]), np.concatenate([y_ir, y_ir])),
    }
    for r in ratios:
        extra = _take_synthetic(xs, ys, needs[f"GS@{r:g}"], rng)
        arms[f"GS@{r:g}"] = (np.concatenate([x_ir, xs[extra]]), np.concatenate([y_ir, ys[extra]]))
    say = print if progress else (lambda s: None)
    say(f"augmentation study on {ds.root}: training class counts {dict(zip(ds.class_names, counts.tolist()))}"
        + (f" (smallest class cut to {minority_fraction:g} of its images)" if minority_fraction < 1 else ""))
    conditions = protocol_conditions(ds, shifts, test_data)
    key = reference_key(ds, cfg, seeds, conditions, minority_fraction=minority_fraction)
    reused = load_reference(reference, key, "augment_study") if reference is not None else {}
    val, test = _real(ds, "val"), (conditions[0].images, conditions[0].labels)
    rows, per_seed = [], {}
    for name, (x, y) in arms.items():
        if name in reused:
            row, ps = reused[name]
            say(f"  {name}: reused from {reference}")
        else:
            row, ps = run_arm(name, x, y, val, test, ds.class_names, cfg, seeds, say, conditions[1:])
        rows.append(row)
        per_seed[name] = ps
    ir = next(r for r in rows if r["name"] == "IR")
    gs_best = max((r for r in rows if r["name"].startswith("GS")), key=lambda r: r["balanced_accuracy_mean"])
    verdict: dict[str, Any] = {"gs_minus_ir_balanced_accuracy": gs_best["balanced_accuracy_mean"] - ir["balanced_accuracy_mean"],
                               "ir_std": ir["balanced_accuracy_std"], "gs_best": gs_best["name"]}
    extra: dict[str, Any] = {"real": str(ds.root), "synthetic": [str(s) for s in synthetic], "minority_fraction": minority_fraction,
                             "ratios": list(ratios), "classifier": cfg.__dict__, "train_counts": counts.tolist(), **taken,
                             "reference_key": key, "real_arms_reused_from": str(reference) if reused else None}
    shift_note = ""
    if len(conditions) > 1:
        table = _write_shift(Path(out), rows, conditions, "Augmentation study")
        acq = [r for r in table if r["kind"] == "acquisition"]
        if acq:
            mean_of = lambda arm, k: float(np.mean([r[f"{arm} {k}"] for r in acq]))  # noqa: E731
            gs_shift = max((r["name"] for r in rows if r["name"].startswith("GS")), key=lambda a: mean_of(a, "balanced_accuracy"))
            verdict.update({"shift_gs_best": gs_shift,
                            "shift_gs_minus_ir_balanced_accuracy": mean_of(gs_shift, "balanced_accuracy") - mean_of("IR", "balanced_accuracy"),
                            "shift_ir_std": mean_of("IR", "balanced_accuracy std")})
            shift_note = (f"\nunder {len(acq)} acquisition shifts, best GS ({gs_shift}) minus IR balanced accuracy on average: "
                          f"{verdict['shift_gs_minus_ir_balanced_accuracy']:+.4f} (IR std over seeds {verdict['shift_ir_std']:.4f}; shift.md)")
        extra["shift"] = {"conditions": [c.describe() for c in conditions],
                          "summary": {r["name"]: _shift_summary(table, r["name"], "IR") for r in rows if r["name"] != "IR"}}
    md = _write_study(Path(out), rows, per_seed, ds.class_names, "augment_study", "Augmentation study", {**extra, **verdict})
    if progress:
        print(md + f"best GS ({gs_best['name']}) minus IR balanced accuracy: {verdict['gs_minus_ir_balanced_accuracy']:+.4f} "
              f"(IR std over seeds {ir['balanced_accuracy_std']:.4f})" + shift_note)
    return {"rows": rows, **verdict}
