"""The shift protocol: every study's figures on test images that were not acquired like the training images.

A figure measured on a test split cut from the training collection says little about radiographs from
elsewhere. Three kinds of test condition are computed here, none needing data a user does not have:

- **acquisition shifts** (:mod:`cxrgan.data.acquisition`): the real test split moved by one kind of shift
  (exposure, contrast, sharpness, noise, rotation, translation, zoom) at a named strength. ``mild`` moves the
  property it acts on by about one standard deviation of the real images' own spread (measured on the Kermany
  training split at 64 px), ``strong`` by about two. Directed kinds move each image one way or the other at
  random, so a shifted test set mixes images moved both ways, as a set pooled from several machines does:
  a score that reads the acquisition rather than the disease then ranks them wrongly;
- **a held-out acquisition cluster** (:func:`cluster_split`): the real images clustered by acquisition
  properties (intensity statistics, sharpness, noise, field of view, collimation), one cluster kept out of all
  training and tested alone. It writes a prepared dataset, so generators, classifiers and the DGM are all trained
  on it with the usual commands;
- **external test sets** (``--test-data DATASET``): any other prepared dataset with the same class names.

Studies evaluate each trained classifier (or anomaly score) on every condition; the threshold chosen on the
validation split is kept, as it would be in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.acquisition import FEATURE_NAMES, KINDS, STRENGTH_NAMES, acquisition_features, shift_images
from ..data.dataset import PreparedDataset, write_subset
from ..data.preprocess import resize_images
from ..errors import CxrganError
from ..utils.images import labelled_rows, save_png
from ..utils.io import write_json_atomic

IN_DISTRIBUTION = "test split"


@dataclass
class Condition:
    """One test set: ``images`` ``(N, S, S)`` uint8 and ``labels`` ``(N,)`` int64 in the real dataset's class
    indices. ``kind``: ``in-distribution``, ``acquisition`` or ``external``."""

    name: str
    kind: str
    images: np.ndarray
    labels: np.ndarray
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "images": int(len(self.labels)), "note": self.note}


def parse_shifts(spec: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """``standard`` (every kind at both strengths), ``none`` (or empty), or comma-separated ``KIND[:STRENGTH]``
    items (a kind alone means both strengths): the ``(kind, strength)`` pairs, in order."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else (spec or [])) if s and s.strip()]
    if not items or items == ["none"]:
        return []
    out: list[tuple[str, str]] = []
    for item in items:
        if item == "standard":
            out += [(k, s) for k in KINDS for s in STRENGTH_NAMES]
            continue
        kind, _, strength = item.partition(":")
        if kind not in KINDS:
            raise CxrganError(f"--shift {item!r}: unknown shift {kind!r}; use standard, none, or some of {', '.join(KINDS)} "
                              f"(each optionally :{'|'.join(STRENGTH_NAMES)} or :NUMBER)")
        if strength and strength not in STRENGTH_NAMES:
            try:
                float(strength)
            except ValueError:
                raise CxrganError(f"--shift {item!r}: the strength must be {' or '.join(STRENGTH_NAMES)} or a number") from None
        out += [(kind, strength)] if strength else [(kind, s) for s in STRENGTH_NAMES]
    return list(dict.fromkeys(out))


def external_test(path: str | Path, ds: PreparedDataset) -> Condition:
    """Another prepared dataset as a test set for ``ds``'s models: its test split when it has one, else every
    image, resized to ``ds``'s size when needed; every class must be one of ``ds``'s (case-insensitive)."""
    ext = PreparedDataset.open(path)
    if ext.multilabel:
        raise CxrganError(f"--test-data {path}: the dataset is multi-label; give a dataset with one class per image")
    lower = {c.lower(): i for i, c in enumerate(ds.class_names)}
    unknown = [c for c in ext.class_names if c.lower() not in lower]
    rows = ext.indices("test")
    split = "test split"
    if len(rows) == 0:
        rows, split = np.arange(len(ext)), "every image"
    labels = np.asarray(ext.labels)[rows].astype(np.int64)
    used = sorted(set(labels.tolist()))
    if any(ext.class_names[c] in unknown for c in used):
        raise CxrganError(f"--test-data {path}: class {next(ext.class_names[c] for c in used if ext.class_names[c] in unknown)!r} "
                          f"is not a class of {ds.root} ({', '.join(ds.class_names)}); an external test set needs the same class names")
    mapped = np.array([lower[ext.class_names[c].lower()] for c in labels], np.int64)
    note = f"{split} of {ext.root}" + ("" if ext.size == ds.size else f", resized from {ext.size} px to {ds.size} px")
    return Condition(f"external {Path(path).name}", "external", resize_images(np.asarray(ext.images[rows]), ds.size), mapped, note)


def site_normals(path: str | Path, ds: PreparedDataset, normal: int) -> np.ndarray:
    """The images of ``path`` (a prepared dataset, every split) labelled with ``ds``'s normal class ``normal`` (matched
    by name), resized to ``ds``'s size: normal radiographs of the site a test set comes from, to set a threshold there."""
    site = PreparedDataset.open(path)
    name = ds.class_names[normal]
    names = [c.lower() for c in site.class_names]
    if site.multilabel or name.lower() not in names:
        raise CxrganError(f"--site-normals {path}: it has no {name} images (classes: {', '.join(site.class_names)}); give "
                          f"a prepared dataset whose {name} images come from the site to calibrate for")
    rows = np.flatnonzero(np.asarray(site.labels) == names.index(name.lower()))
    if len(rows) < 5:
        raise CxrganError(f"--site-normals {path}: {len(rows)} {name} image(s); a threshold needs at least 5 (a few dozen "
                          "place it well)")
    return resize_images(np.asarray(site.images[rows]), ds.size)


def protocol_conditions(ds: PreparedDataset, shifts: str | Sequence[str] | None = "standard",
                    test_data: Sequence[str | Path] = (), seed: int = 0, split: str = "test") -> list[Condition]:
    """The in-distribution test split first, then each acquisition shift of it, then each external test set."""
    rows = ds.indices(split)
    x, y = np.asarray(ds.images[rows]), np.asarray(ds.labels)[rows].astype(np.int64)
    out = [Condition(IN_DISTRIBUTION, "in-distribution", x, y, f"the {split} split of {ds.root}")]
    for i, (kind, strength) in enumerate(parse_shifts(shifts)):
        out.append(Condition(f"{kind}:{strength}", "acquisition", shift_images(x, kind, strength, seed=seed + 1000 * i), y,
                                 f"the {split} split, {kind} at {strength}"))
    out += [external_test(p, ds) for p in test_data]
    return out


def summarize_conditions(values: dict[str, float], higher_is_better: bool = True) -> dict[str, Any]:
    """For one figure measured under each condition (``{condition name: value}``): the in-distribution value,
    the mean and the worst over the acquisition shifts (and which), and the drop of each from in-distribution."""
    base = values.get(IN_DISTRIBUTION, float("nan"))
    acq = {k: v for k, v in values.items() if ":" in k and not k.startswith("external ")}
    out: dict[str, Any] = {"in_distribution": base}
    if acq:
        worst = min(acq, key=lambda k: acq[k]) if higher_is_better else max(acq, key=lambda k: acq[k])
        mean = float(np.mean(list(acq.values())))
        out.update({"acquisition_mean": mean, "acquisition_worst": acq[worst], "acquisition_worst_shift": worst,
                    "acquisition_mean_drop": base - mean, "acquisition_worst_drop": base - acq[worst]})
    return out


# -- the held-out acquisition cluster ---------------------------------------------------------------------
@dataclass
class Clusters:
    """Acquisition clusters of a dataset's images: ``assignment`` ``(N,)``, the standardized feature means of each
    cluster ``(K, F)`` and the counts per cluster, split and class."""

    assignment: np.ndarray
    centroids: np.ndarray
    counts: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)


def acquisition_clusters(ds: PreparedDataset, k: int = 4, seed: int = 0, within_class: bool = True) -> Clusters:
    """K-means on the standardized acquisition features of every image. With ``within_class`` each feature's class
    mean is removed first, so clusters group images acquired alike whatever their class (an image is in a cluster
    for how it was taken, not for the disease it shows) and each cluster holds every class."""
    from sklearn.cluster import KMeans

    if k < 2:
        raise CxrganError(f"--clusters must be at least 2, got {k}")
    feats = acquisition_features(ds.images)
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    labels = np.asarray(ds.labels)
    if within_class and not ds.multilabel:
        for c in np.unique(labels):
            z[labels == c] -= z[labels == c].mean(0)
    assignment = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
    centroids = np.stack([z[assignment == c].mean(0) for c in range(k)])
    splits = np.asarray(ds.splits)
    from ..data.splits import SPLIT_NAMES

    counts = {c: {SPLIT_NAMES[s]: {name: int(((assignment == c) & (splits == s) & (labels == i)).sum())
                                   for i, name in enumerate(ds.class_names)} for s in range(len(SPLIT_NAMES))}
              for c in range(k)}
    return Clusters(assignment, centroids, counts)


def _held_out_choice(cl: Clusters, class_names: Sequence[str], min_test_per_class: int) -> int:
    """The cluster farthest from the average acquisition among those whose test split has at least
    ``min_test_per_class`` images of every class."""
    ok = [c for c, per in cl.counts.items() if all(per["test"][n] >= min_test_per_class for n in class_names)]
    if not ok:
        raise CxrganError(f"no acquisition cluster has {min_test_per_class} test images of every class; use fewer --clusters")
    return max(ok, key=lambda c: float(np.linalg.norm(cl.centroids[c])))


def cluster_split(real: str | Path, out: str | Path, clusters: int = 4, hold_out: int | None = None, seed: int = 0,
                  min_test_per_class: int = 20, overwrite: bool = False, site_out: str | Path | None = None) -> dict[str, Any]:
    """Write ``real`` with one acquisition cluster held out: its training and validation images are dropped and
    its test split holds only that cluster's test images (the original splits are kept, so patient grouping is
    too). Beside the dataset, ``cluster_split.json`` (counts and feature profile of every cluster, the choice)
    and ``clusters.png`` (a row of examples per cluster). ``hold_out``: the cluster's index (default: the most
    atypical one with at least ``min_test_per_class`` test images of every class). ``site_out``: also write the
    dropped images (the held-out cluster's training and validation images: other patients of the same "site") as a
    dataset of their own, for calibrating a threshold there (``anomaly --site-normals``). Returns the summary."""
    ds = PreparedDataset.open(real)
    if ds.multilabel:
        raise CxrganError(f"{real} is multi-label; the held-out cluster split needs one class per image")
    cl = acquisition_clusters(ds, clusters, seed)
    if hold_out is None:
        hold_out = _held_out_choice(cl, ds.class_names, min_test_per_class)
        why = f"the most atypical acquisition among clusters with >= {min_test_per_class} test images of every class"
    elif not 0 <= hold_out < clusters:
        raise CxrganError(f"--hold-out must be a cluster index from 0 to {clusters - 1}, got {hold_out}")
    else:
        why = "--hold-out"
    splits = np.asarray(ds.splits)
    test = splits == 2
    keep = np.flatnonzero(((cl.assignment != hold_out) & ~test) | ((cl.assignment == hold_out) & test))
    out = Path(out)
    profile = {int(c): {name: round(float(v), 3) for name, v in zip(FEATURE_NAMES, cl.centroids[c])} for c in range(clusters)}
    summary = {"real": str(ds.root), "clusters": clusters, "seed": seed, "held_out": int(hold_out), "chosen_by": why,
               "counts": {int(c): v for c, v in cl.counts.items()}, "feature_profile_z": profile,
               "kept_images": int(len(keep)), "note": "feature profiles are standardized, with each class's mean removed"}
    new = write_subset(ds, keep, out, {"kind": "held-out acquisition cluster", "clusters": clusters, "held_out": int(hold_out),
                                       "seed": seed}, overwrite=overwrite)
    if site_out is not None:
        site_rows = np.flatnonzero((cl.assignment == hold_out) & ~test)
        write_subset(ds, site_rows, Path(site_out), {"kind": "held-out acquisition cluster, its training and validation "
                     "images", "clusters": clusters, "held_out": int(hold_out), "seed": seed}, overwrite=overwrite)
        summary["site_images"] = int(len(site_rows))
    write_json_atomic(new.root / "cluster_split.json", summary)
    rng = np.random.default_rng(seed)
    rows = [np.asarray(ds.images[np.sort(rng.choice(np.flatnonzero(cl.assignment == c), size=min(8, int((cl.assignment == c).sum())),
                                                    replace=False))]) for c in range(clusters)]
    save_png(labelled_rows(rows, [f"cluster {c}" + (" (held out)" if c == hold_out else "") for c in range(clusters)],
                           scale=max(1, 96 // ds.size)), new.root / "clusters.png")
    return summary
