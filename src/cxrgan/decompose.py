"""Disease decomposition and anomaly scoring with a trained ``dgm`` run: ``decompose`` and ``anomaly``.

``decompose`` writes, for every input radiograph, the synthesized normal image, the residual map and an overlay of
the map on the input, with a row of anomaly scores per image in ``scores.csv``. ``anomaly`` scores a prepared
dataset's test split, chooses the score and the threshold on the validation split, and reports ROC AUC, average
precision, sensitivity and specificity beside three baselines (a plain autoencoder, a PatchCore-style patch memory
and the distance to the mean normal image), with the ROC curves, a box plot per class, the four example panels
and, where the dataset has lesion masks, pixel-level localization; under the shift protocol too.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .data.dataset import PreparedDataset
from .data.decode import FileItem, process
from .data.preprocess import Preprocess
from .data.sources.folder import classify_file, walk_files
from .errors import CxrganError
from .evaluate import anomaly as am
from .sample import LoadedRun, load_run
from .runtime.execution import pick_device
from .utils.images import labelled_rows, save_png, to_uint8
from .utils.io import write_json_atomic, write_text_atomic
from .utils.tensors import batches

def load_translator(run: str | Path, checkpoint: str | int = "best", device: str = "auto",
                    score_shift: int | None = None) -> LoadedRun:
    """Load a ``dgm`` run (its averaged G and its D); any other family is refused with a clear message.
    ``score_shift`` replaces the run's ``model.score_shift`` (pixels of the shift consensus; 0 = one pass)."""
    loaded = load_run(run, checkpoint, pick_device(device))
    if not getattr(loaded.family, "translates", False):
        raise CxrganError(f"run {run} is a {loaded.cfg.model.family} run; decompose and anomaly need a dgm run "
                          "(cxrgan train --model dgm)")
    if score_shift is not None:
        limit = loaded.family.image_size // 8
        if not 0 <= score_shift <= limit:
            raise CxrganError(f"--score-shift must be from 0 (one pass) to {limit} pixels for {loaded.family.image_size} px "
                              f"images, got {score_shift}")
        loaded.family.score_shift = score_shift
    return loaded


@torch.no_grad()
def score_images(loaded: LoadedRun, images_u8: np.ndarray,
                 batch: int = 128) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every anomaly score ``{name: (N,)}``, the normal images and the residuals (input minus normal), both
    ``(N, S, S)`` float in [-1, 1] and [-2, 2], for uint8 inputs ``(N, S, S)``."""
    fam = loaded.family
    dev = next(fam.parameters()).device
    scores: dict[str, list[np.ndarray]] = {}
    normals, residuals = [], []
    for x in batches(images_u8, batch, dev):
        normal, residual, batch_scores = fam.decompose_and_score(x)
        for k, v in batch_scores.items():
            scores.setdefault(k, []).append(v.float().cpu().numpy())
        normals.append(normal.float().cpu().numpy()[:, 0])
        residuals.append(residual.float().cpu().numpy()[:, 0])
    empty = np.zeros((0,) + tuple(np.shape(images_u8)[1:]), np.float32)
    return ({k: np.concatenate(v) for k, v in scores.items()}, np.concatenate(normals) if normals else empty,
            np.concatenate(residuals) if residuals else empty)


def overlay(x_u8: np.ndarray, residual: np.ndarray, scale: float | None = None) -> np.ndarray:
    """RGB ``(S, S, 3)`` uint8: the input in grey with the anomaly map (the residual's positive part, smoothed at
    lesion scale: see :func:`cxrgan.evaluate.anomaly.smooth_maps`) in red (``scale`` = value shown at full red;
    default the image's 99th percentile)."""
    mag = am.smooth_maps(np.clip(residual, 0, None)[None])[0]
    scale = scale or max(float(np.quantile(mag, 0.99)), 1e-6)
    heat = np.clip(mag / scale, 0, 1)
    grey = x_u8.astype(np.float32)
    rgb = np.stack([grey * (1 - heat) + 255 * heat, grey * (1 - heat), grey * (1 - heat)], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# -- decompose ---------------------------------------------------------------------------------------------
@dataclass
class InputImage:
    name: str
    origin: str
    image: np.ndarray | None = None
    note: str = ""
    error: str = ""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "image"


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file() and (path / "images.npy").is_file()


def run_preprocess(loaded: LoadedRun) -> Preprocess:
    """The preprocessing the run's training data had (size from the run), so inputs look like training images."""
    size = int(loaded.info["image_size"])
    try:
        manifest = json.loads((Path(loaded.info["data_path"]) / "manifest.json").read_text())
        p = manifest.get("preprocess", {})
        return Preprocess(size=size, fit=p.get("fit", "crop"), equalize=bool(p.get("equalize", False)),
                          intensity=p.get("intensity", "auto"))
    except (OSError, ValueError, KeyError, TypeError):
        return Preprocess(size=size)


def collect_inputs(inputs: Sequence[str | Path], prep: Preprocess, split: str | None = "test") -> list[InputImage]:
    """Read files, folders (recursively) and prepared datasets (rows of ``split``) into images of the run's size.
    Unreadable or non-image files come back with ``error`` set; nothing else is dropped."""
    out: list[InputImage] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            out.append(InputImage(_safe(path.name), str(path), error=f"{path}: no such file or folder"))
        elif _is_dataset(path):
            ds = PreparedDataset.open(path)
            rows = ds.indices(split)
            for i in rows:
                img = np.asarray(ds.images[i])
                note = "" if ds.size == prep.size else f"resized from {ds.size} px to {prep.size} px"
                if ds.size != prep.size:
                    img = np.asarray(Image.fromarray(img).resize((prep.size, prep.size), Image.LANCZOS))
                cls = ds.class_names[int(ds.labels[i])] if not ds.multilabel else ""
                out.append(InputImage(f"{_safe(path.name)}_{split or 'all'}_{int(i):06d}", f"{path}#{int(i)}", img, note=
                                      "; ".join(filter(None, [f"class {cls}" if cls else "", note]))))
        else:
            files = walk_files(path) if path.is_dir() else [path]
            if path.is_dir() and not files:
                out.append(InputImage(_safe(path.name), str(path), error=f"{path}: the folder has no files"))
            for f in files:
                origin = str(f)
                why = classify_file(f)
                if why:
                    out.append(InputImage(_safe(f.stem), origin, error=f"{f}: {why}"))
                    continue
                dec = process(FileItem(str(f), origin), prep)
                if dec.error:
                    out.append(InputImage(_safe(f.stem), origin, error=dec.error))
                    continue
                note = ""
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # Pillow's complaints about a file decoded fine above
                        with Image.open(f) as im:
                            if im.size != (prep.size, prep.size):
                                note = f"resized from {im.size[0]}x{im.size[1]} to {prep.size} px"
                except Exception:  # DICOM and anything Pillow cannot size: decoded fine above, note left out
                    pass
                out.append(InputImage(_safe(f.stem), origin, dec.image, note=note))
    names: dict[str, int] = {}
    for item in out:  # unique output names
        names[item.name] = names.get(item.name, 0) + 1
        if names[item.name] > 1:
            item.name = f"{item.name}_{names[item.name]}"
    return out


def decompose(run: str | Path, inputs: Sequence[str | Path], out: str | Path, checkpoint: str | int = "best",
              split: str | None = "test", device: str = "auto", score_shift: int | None = None) -> list[dict]:
    """Decompose every input into normal image + residual; write ``normal/``, ``residual/``, ``overlay/`` PNGs and
    ``scores.csv`` (one row per input, with ``error`` for inputs that could not be read) under ``out``.
    Returns the CSV rows."""
    loaded = load_translator(run, checkpoint, device, score_shift)
    out = Path(out)
    items = collect_inputs(inputs, run_preprocess(loaded), split)
    good = [it for it in items if it.image is not None]
    if not good:
        reasons = "; ".join(it.error for it in items[:3])
        raise CxrganError(f"none of the inputs could be read ({reasons}); give PNG, JPEG or DICOM files, folders of "
                          "them, or a prepared dataset")
    imgs = np.stack([it.image for it in good])
    scores, normals, residuals = score_images(loaded, imgs)
    for d in ("normal", "residual", "overlay"):
        (out / d).mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for it in items:
        row = {"name": it.name, "origin": it.origin, "note": it.note, "error": it.error}
        if it.image is not None:
            save_png(to_uint8(normals[k]), out / "normal" / f"{it.name}.png")
            save_png(to_uint8(residuals[k]), out / "residual" / f"{it.name}.png")
            save_png(overlay(it.image, residuals[k]), out / "overlay" / f"{it.name}.png")
            row.update({s: f"{float(v[k]):.6g}" for s, v in scores.items()})
            k += 1
        rows.append(row)
    fields = ["name", "origin", *scores.keys(), "note", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out / "scores.csv", buf.getvalue())
    return rows


# -- anomaly ------------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A dgm run's anomaly score and the threshold chosen for it on a validation split (Youden's J)."""

    score: str
    threshold: float
    val_roc_auc: float
    val_sensitivity: float
    val_specificity: float
    source: str  # where the threshold was chosen, in words


def choose_score(val_abnormal: np.ndarray, val_scores: dict[str, np.ndarray], score: str = "auto") -> tuple[str, dict[str, float]]:
    """The score to report (``score``, or with ``auto`` the one of highest validation ROC AUC) and every score's
    validation ROC AUC."""
    val_auc = {k: am.roc_auc(val_abnormal, v) for k, v in val_scores.items()}
    return (max(val_auc, key=lambda k: val_auc[k]) if score == "auto" else score), val_auc


def calibrate(loaded: LoadedRun, data: str | Path | None = None, normal_class: str | None = None) -> Calibration:
    """Choose a dgm run's score and threshold on the validation split of ``data`` (default: the dataset the run trained
    on), as ``cxrgan anomaly`` does; ``normal_class`` defaults to the run's."""
    data = Path(data or loaded.info.get("data_path", ""))
    if not (data / "manifest.json").is_file():
        raise CxrganError(f"the dataset to choose a threshold on ({data}) is not found; give a prepared dataset with "
                          "normal and abnormal validation images")
    ds, normal = _dataset_for(loaded, data, normal_class or getattr(loaded.family, "normal_class", "NORMAL"))
    rows, _, abnormal = _split(ds, "val", normal)
    scores, _, _ = score_images(loaded, np.asarray(ds.images[rows]))
    chosen, val_auc = choose_score(abnormal, scores)
    t = am.youden_threshold(abnormal, scores[chosen])
    sens, spec = am.rates(abnormal, scores[chosen], t)
    return Calibration(chosen, t, val_auc[chosen], sens, spec, f"validation split of {data} ({len(rows)} images)")


def _dataset_for(loaded: LoadedRun, data: str | Path, normal_class: str) -> tuple[PreparedDataset, int]:
    ds = PreparedDataset.open(data)
    if ds.multilabel:
        raise CxrganError(f"{data} is multi-label; anomaly needs one class per image (prepare it without --multilabel)")
    if ds.size != int(loaded.info["image_size"]):
        raise CxrganError(f"{data} has {ds.size} px images but the run was trained at {loaded.info['image_size']} px; "
                          "prepare the data at the run's --size")
    try:
        return ds, ds.class_index(normal_class)
    except CxrganError:
        raise CxrganError(f"--normal-class {normal_class!r} is not a class of {data}; its classes are "
                          f"{', '.join(ds.class_names)}") from None


def _split(ds: PreparedDataset, split: str, normal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = ds.indices(split)
    labels = np.asarray(ds.labels)[rows].astype(np.int64)
    abnormal = labels != normal
    if abnormal.all() or not abnormal.any():
        raise CxrganError(f"{ds.root}: the {split} split needs both normal and abnormal images "
                          f"(it has {int((~abnormal).sum())} normal, {int(abnormal.sum())} abnormal)")
    return rows, labels, abnormal


def _method_row(name: str, val_abnormal: np.ndarray, val_scores: np.ndarray, abnormal: np.ndarray, scores: np.ndarray) -> dict:
    """ROC AUC, AP and the validation threshold's sensitivity and specificity of one method on one test set."""
    op = am.operating_point(val_abnormal, val_scores, abnormal, scores)
    return {"method": name, "val_roc_auc": am.roc_auc(val_abnormal, val_scores), "roc_auc": am.roc_auc(abnormal, scores),
            "average_precision": am.average_precision(abnormal, scores), "threshold": op.threshold,
            "val_specificity": op.val_specificity, "sensitivity": op.sensitivity, "specificity": op.specificity,
            "balanced_accuracy": (op.sensitivity + op.specificity) / 2, "accuracy": op.accuracy, "f1": op.f1}


def anomaly(run: str | Path, data: str | Path, out: str | Path, normal_class: str = "NORMAL", checkpoint: str | int = "best",
            score: str = "auto", baseline_epochs: int = 10, seed: int = 0, device: str = "auto",
            score_shift: int | None = None, shifts: str | None = "standard", test_data: Sequence[str | Path] = (),
            site_normals: str | Path | None = None) -> dict:
    """Score ``data``'s test split with a dgm run and the baselines; write the report under ``out``.

    ``score``: one of :data:`cxrgan.models.dgm.SCORES` or ``auto`` (the one with the highest validation ROC AUC).
    The threshold is chosen on validation (Youden's J); test figures are measured once. ``shifts`` and
    ``test_data``: the shift protocol's further test sets (:func:`cxrgan.evaluate.shift.protocol_conditions`), each
    scored by every method with the same thresholds (``shift.md``, ``shift.csv``). ``site_normals``: a prepared
    dataset of normal images from the site the test images come from; every method then also gets a site threshold
    (:func:`cxrgan.evaluate.anomaly.site_threshold`) and its sensitivity and specificity on the test split and each
    ``test_data`` set. Returns the summary."""
    from .evaluate.shift import protocol_conditions, site_normals as read_site_normals, summarize_conditions
    from .models.dgm import SCORES

    if score != "auto" and score not in SCORES:
        raise CxrganError(f"--score {score!r} is not known; use auto or one of {', '.join(SCORES)}")
    loaded = load_translator(run, checkpoint, device, score_shift)
    ds, normal = _dataset_for(loaded, data, normal_class)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    val_rows, _, val_ab = _split(ds, "val", normal)
    test_rows, test_labels, test_ab = _split(ds, "test", normal)
    train_normal = ds.indices("train", [ds.class_names[normal]])
    if len(train_normal) < 2:
        raise CxrganError(f"{data}: the train split has {len(train_normal)} {ds.class_names[normal]} image(s); the baselines need some")
    conditions = protocol_conditions(ds, shifts, test_data, seed=seed)
    for c in conditions[1:]:
        if (c.labels != normal).all() or (c.labels == normal).all():
            raise CxrganError(f"{c.note}: needs both {ds.class_names[normal]} and abnormal images to measure detection")
    val_u8, test_u8 = np.asarray(ds.images[val_rows]), conditions[0].images
    train_u8 = np.asarray(ds.images[train_normal])

    val_scores, _, _ = score_images(loaded, val_u8)
    test_scores, test_normals, test_residuals = score_images(loaded, test_u8)
    chosen, val_auc = choose_score(val_ab, val_scores, score)
    dgm_maps = am.smooth_maps(np.clip(test_residuals, 0, None))  # the input denser than its normal image

    # The baselines on every image set at once: validation, then each test condition (the test split first).
    site_u8 = None if site_normals is None else read_site_normals(site_normals, ds, normal)
    sets = [val_u8, *(c.images for c in conditions)] + ([] if site_u8 is None else [site_u8])
    baselines = {
        "autoencoder": am.autoencoder_scores(train_u8, val_u8[~val_ab], sets, ds.size, baseline_epochs, seed, device),
        "patch memory (PatchCore-style)": am.patch_memory_scores(train_u8, sets, seed=seed),
        "mean normal image": [am.mean_image_scores(train_u8, x) for x in sets],
    }
    methods = {f"dgm ({chosen})": (val_scores[chosen], test_scores[chosen], dgm_maps)}
    methods.update({name: (res[0][0], res[1][0], am.smooth_maps(res[1][1])) for name, res in baselines.items()})
    masks = None if ds.masks is None else np.asarray(ds.masks[test_rows])
    table = []
    for name, (v, t, maps) in methods.items():
        row = _method_row(name, val_ab, v, test_ab, t)
        if masks is not None and masks.any():
            row.update(am.localization(maps, masks))
        table.append(row)
    summary = {
        "run": str(run), "checkpoint_step": loaded.step, "data": str(data), "normal_class": ds.class_names[normal],
        "classes": ds.class_names, "score": chosen, "score_chosen_by": "validation ROC AUC" if score == "auto" else "--score",
        "score_shift": loaded.family.score_shift,
        "val_roc_auc_by_score": val_auc, "test_roc_auc_by_score": {k: am.roc_auc(test_ab, v) for k, v in test_scores.items()},
        "n_val": int(len(val_rows)), "n_test": int(len(test_rows)), "n_test_abnormal": int(test_ab.sum()),
        "methods": table,
    }
    # Every method's scores on every test condition, each scored once (the test split's are the table's).
    condition_scores = [[t for _, t, _ in methods.values()]] + [
        [score_images(loaded, c.images)[0][chosen]] + [res[k + 1][0] for res in baselines.values()]
        for k, c in enumerate(conditions) if k > 0]
    if site_u8 is not None:
        site_scores = [score_images(loaded, site_u8)[0][chosen]] + [res[-1][0] for res in baselines.values()]
        summary["site_calibration"] = _site_calibration(site_normals, conditions, condition_scores, normal, table, site_scores)
    if len(conditions) > 1:
        summary["shift"] = _shift_figures(out, conditions, condition_scores, normal, val_ab,
                                          {name: v for name, (v, _, _) in methods.items()}, table)
        summary["shift"]["summary"] = {m: summarize_conditions({r["condition"]: r[f"{m} roc_auc"] for r in summary["shift"]["rows"]})
                                       for m in methods}
    _write_scores_csv(out / "scores.csv", test_rows, test_labels, ds.class_names, test_scores,
                      {name: res[1][0] for name, res in baselines.items()}, test_scores[chosen] >= table[0]["threshold"])
    _figures(out, ds, methods, test_ab, test_labels, test_u8, test_normals, test_residuals, test_scores[chosen],
             table[0]["threshold"], chosen)
    summary["figures"] = [n for n in ("roc.png", "box.png", *(p + ".png" for p in am.PANELS)) if (out / n).is_file()]
    write_json_atomic(out / "anomaly.json", summary)
    write_text_atomic(out / "report.md", _markdown(summary))
    return summary


def _site_calibration(path: str | Path, conditions, condition_scores: list[list[np.ndarray]], normal: int, table: list[dict],
                      site_scores: list[np.ndarray]) -> dict:
    """Each method's site threshold (from its scores of the site normals, at the specificity its validation threshold
    had) and the sensitivity and specificity it gives on the test split and each external test set, beside the
    validation threshold's. ``condition_scores[k]``: every method's scores on ``conditions[k]``."""
    thresholds = {r["method"]: am.site_threshold(site, r["val_specificity"]) for r, site in zip(table, site_scores)}
    rows = []
    for c, scores in zip(conditions, condition_scores):
        if c.kind == "acquisition":
            continue  # a simulated shift has no site of its own to calibrate on
        ab = c.labels != normal
        for r, t in zip(table, scores):
            vs, vp = am.rates(ab, t, r["threshold"])
            ss, sp = am.rates(ab, t, thresholds[r["method"]])
            rows.append({"condition": c.name, "method": r["method"], "val_threshold_sensitivity": vs,
                         "val_threshold_specificity": vp, "site_threshold_sensitivity": ss, "site_threshold_specificity": sp})
    return {"site_normals": str(path), "n_site_normals": int(len(site_scores[0])), "thresholds": thresholds, "rows": rows}


def _shift_figures(out: Path, conditions, condition_scores: list[list[np.ndarray]], normal: int, val_ab: np.ndarray,
                   val_scores: dict[str, np.ndarray], table: list[dict]) -> dict:
    """Every method on every test condition (the test split's figures are ``table``'s; ``condition_scores[k]`` holds
    every method's scores on condition ``k``): ``shift.csv``/``shift.md``, ``shift_roc_auc.png``; returns
    ``{"conditions", "rows"}``."""
    from .report.evalplots import condition_chart
    from .report.tables import write_table

    names = [r["method"] for r in table]
    rows = []
    for k, (c, scores) in enumerate(zip(conditions, condition_scores)):
        ab = c.labels != normal
        per = ({r["method"]: r for r in table} if k == 0 else
               {m: _method_row(m, val_ab, val_scores[m], ab, t) for m, t in zip(names, scores)})
        row: dict = {"condition": c.name, "kind": c.kind, "images": int(len(ab)), "abnormal": int(ab.sum())}
        for m in names:
            for key in ("roc_auc", "sensitivity", "specificity", "balanced_accuracy"):
                row[f"{m} {key}"] = per[m][key]
        rows.append(row)
    cols = ["condition", "kind", "images", "abnormal"] + [f"{m} {k}" for m in names for k in ("roc_auc", "sensitivity", "specificity")]
    write_table(rows, cols, out / "shift")
    condition_chart({m: {r["condition"]: r[f"{m} roc_auc"] for r in rows} for m in names}, {}, "ROC AUC", out / "shift_roc_auc.png",
                    "Anomaly detection: ROC AUC per test condition (thresholds and score chosen on validation)")
    return {"conditions": [c.describe() for c in conditions], "rows": rows}


BASELINE_COLUMNS = {"autoencoder": "autoencoder", "patch memory (PatchCore-style)": "patch_memory", "mean normal image": "mean_image"}


def _write_scores_csv(path: Path, rows, labels, class_names, scores, baselines: dict[str, np.ndarray], called) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "class", *scores.keys(), *(BASELINE_COLUMNS[b] for b in baselines), "called_abnormal"])
    for i in range(len(rows)):
        w.writerow([int(rows[i]), class_names[int(labels[i])], *(f"{float(v[i]):.6g}" for v in scores.values()),
                    *(f"{float(v[i]):.6g}" for v in baselines.values()), int(called[i])])
    write_text_atomic(path, buf.getvalue())


def _figures(out: Path, ds: PreparedDataset, methods: dict, abnormal: np.ndarray, labels: np.ndarray, x_u8: np.ndarray,
             normals: np.ndarray, residuals: np.ndarray, chosen_scores: np.ndarray, threshold: float, chosen: str) -> None:
    from .report.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for i, (name, (_, t, _)) in enumerate(methods.items()):
        fpr, tpr = am.roc_points(abnormal, t)
        ax.plot(fpr, tpr, color=f"C{i}", label=f"{name}: AUC {am.roc_auc(abnormal, t):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC, test split")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, out / "roc.png")
    plt.close(fig)

    present = sorted(set(labels.tolist()))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(present), 3.8))
    ax.boxplot([chosen_scores[labels == c] for c in present], showfliers=True)
    ax.set_xticks(range(1, len(present) + 1), [ds.class_names[c] for c in present])
    ax.axhline(threshold, color="C3", lw=0.8, ls="--", label="threshold (validation)")
    ax.set_ylabel(f"{chosen} score")
    ax.set_title("DGM score per class, test split")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "box.png")
    plt.close(fig)

    called = chosen_scores >= threshold
    panels = dict(zip(am.PANELS, (~abnormal & ~called, abnormal & ~called, ~abnormal & called, abnormal & called)))
    for name, sel in panels.items():
        idx = np.flatnonzero(sel)
        # The most confident examples of each cell: far from the threshold.
        idx = idx[np.argsort(-np.abs(chosen_scores[idx] - threshold))][:3]
        if len(idx) == 0:
            (out / f"{name}.png").unlink(missing_ok=True)  # an earlier report's panel would show images not in the cell
            continue
        rows = [x_u8[idx], to_uint8(normals[idx]), to_uint8(residuals[idx])]  # residual: grey = 0
        save_png(labelled_rows(rows, ["input", "normal", "residual"], scale=max(1, 128 // ds.size)), out / f"{name}.png")


def _markdown(s: dict) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None or v != v else f"{v:.3f}"

    lines = [f"# Anomaly detection: {s['data']}", "",
             f"Run `{s['run']}` (step {s['checkpoint_step']}), normal class {s['normal_class']}; test split "
             f"{s['n_test']} images ({s['n_test_abnormal']} abnormal). The DGM score `{s['score']}` and every threshold were "
             "chosen on the validation split. Residual maps: "
             + (f"consensus of the input shifted by up to {s['score_shift']} px." if s.get("score_shift") else "one pass of G."), "",
             "| method | val ROC AUC | test ROC AUC | AP | sensitivity | specificity | accuracy | F1 | pixel AUC | best Dice |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["methods"]:
        lines.append(f"| {r['method']} | {f(r['val_roc_auc'])} | {f(r['roc_auc'])} | {f(r['average_precision'])} | "
                     f"{f(r['sensitivity'])} | {f(r['specificity'])} | {f(r.get('accuracy'))} | {f(r.get('f1'))} | "
                     f"{f(r.get('pixel_auc'))} | {f(r.get('best_dice'))} |")
    sc = s.get("site_calibration")
    if sc:
        lines += ["", f"Site thresholds from {sc['n_site_normals']} normal images of `{sc['site_normals']}` (each method called "
                  "them normal as often as its validation threshold called the validation normals); sensitivity / specificity:",
                  "", "| test set | method | at the validation threshold | at the site threshold |", "|---|---|---|---|"]
        lines += [f"| {r['condition']} | {r['method']} | {f(r['val_threshold_sensitivity'])} / {f(r['val_threshold_specificity'])} | "
                  f"{f(r['site_threshold_sensitivity'])} / {f(r['site_threshold_specificity'])} |" for r in sc["rows"]]
    lines += ["", "Every DGM score (ROC AUC):", "", "| score | validation | test |", "|---|---|---|"]
    for k, v in s["val_roc_auc_by_score"].items():
        lines.append(f"| {k} | {f(v)} | {f(s['test_roc_auc_by_score'][k])} |")
    sh = s.get("shift")
    if sh:
        names = [r["method"] for r in s["methods"]]
        lines += ["", "Under the shift protocol (the same score and thresholds; ROC AUC, and sensitivity / specificity at the "
                  "validation threshold):", "", "| condition | images | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for r in sh["rows"]:
            lines.append(f"| {r['condition']} | {r['images']} | " + " | ".join(
                f"{f(r[f'{m} roc_auc'])} ({f(r[f'{m} sensitivity'])} / {f(r[f'{m} specificity'])})" for m in names) + " |")
        lines += ["", "| method | test split | mean over acquisition shifts | worst shift |", "|---|---|---|---|"]
        for m, v in sh["summary"].items():
            if "acquisition_mean" in v:
                lines.append(f"| {m} | {f(v['in_distribution'])} | {f(v['acquisition_mean'])} | "
                             f"{f(v['acquisition_worst'])} ({v['acquisition_worst_shift']}) |")
    lines += ["", f"Figures: {', '.join(s['figures'])}."]
    empty = [n for n in am.PANELS if n + ".png" not in s["figures"]]
    if empty:
        lines.append(f"No test image fell in {', '.join(n.replace('_', ' ') for n in empty)}: no panel for it.")
    return "\n".join(lines + [""])
