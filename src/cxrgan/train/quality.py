"""Training-time quality and diversity, and the rule that picks the best checkpoint.

At every checkpoint the generator's samples for a fixed set of latents are embedded in a feature space and
scored: Fréchet distance to real training images, and diversity (mean pairwise feature distance of the samples,
within each class for conditional families) next to the same figure on the training images (every one, up to
``REFERENCE_MAX``); the diversity ratio is the worst class's. The Vendi ratio compares the effective number of
distinct samples (:func:`~cxrgan.evaluate.distribution.vendi_score`) with that of as many real images (the
monitor's own rows: the count grows with the set), and catches what the mean distance misses: a generator
that draws a few images over and over (8 real radiographs repeated 16 times each keep 0.78-0.99 of real's mean
distance, and 0.44 of its Vendi score, among 128; ``benchmarks/diversity_measures.py``). A checkpoint is *healthy* when both are at least ``collapse_ratio``;
the lower of the two is its health figure. For an unconditional family on labelled data, the pooled diversity in a classifier
space mostly measures whether the samples cover the classes in proportion (the distance between classes is the
largest one there), so the monitor also reports ``class_coverage``: the least-drawn class's share of samples
over its share of real images, both as the space's classifier labels them (1: every class drawn at least as
often as in the data). Two more figures split the pooled ratio into its parts: ``class_within_ratio``, the worst
class's diversity among the samples the classifier puts in it, over the same for real images (the figure a
conditional family's diversity ratio is), and ``class_separation``, the mean distance between the classes' centroids
of the samples over that of real images. On real radiographs an unconditional DCGAN that drew the classes in
proportion and varied each as real images do still read 0.78 pooled: its classes sat at 0.62 of real's separation,
in-between images that are neither clearly NORMAL nor clearly PNEUMONIA. A conditional family's per-class ratio
can err the other way: samples drawn for one class that look like another count as variety within it. So for
conditional families ``label_agreement`` is how often the classifier puts a sample in the class it was drawn for
(against real images), and ``class_within_ratio`` counts only those that it does: the CGAN's seed 1 at step
1,000 read 0.88 per class with 24 % of its NORMAL samples called PNEUMONIA, and 0.80 on the agreeing ones.
Beside them the monitor logs ``precision`` and ``recall`` (Kynkäänniemi et al. 2019): a mean distance rises when
samples move to the far sides of their classes, which recall does not reward. On real radiographs a DCGAN whose G
was asked for confident class verdicts of its D (a term tried and left out, see ``models.label_aware``) read 0.79
pooled at step 1,000 against 0.75 without, at recall 0.63 against 0.76 (``docs/results/long_runs/label_aware``). The
feature space is the dataset's trained classifier space when one has been
trained and has passed the distortion check (``cxrgan features train`` then ``cxrgan evaluate
--check-features``; see :mod:`cxrgan.evaluate.validation`), otherwise the fixed ``randconv-v1``.

Selection rule: a checkpoint is eligible as *best* only when it is healthy: both diversity figures at least
``collapse_ratio`` of the real ones (at any step: an early, blurry, low-diversity checkpoint is not eligible either); among the
eligible ones the lowest FD wins, in a validated space. In ``randconv-v1`` FD does not choose (:func:`fd_chooses`):
the latest eligible checkpoint is best. A run with no eligible checkpoint has no best, and ``sample`` uses the last.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..evaluate.distribution import frechet_distance, mean_pairwise_distance, prdc, vendi_score
from ..evaluate.extractors import FeatureSpace, cached_extractor, load_extractor, randconv_space
from ..evaluate.validation import cached_check
from ..utils.tensors import to_model_range
from .data import TrainData

log = logging.getLogger("cxrgan.train")
# Each group's diversity is measured on all of the monitor's samples in it, up to this many. Real images scored as
# if generated read 0.98 +- 0.022 of real (worst class) and 0.99 +- 0.027 pooled on 128 per group, where the real
# reference drawn by the run's seed shifts every checkpoint of a run alike; on every sample of the 1,024, 0.99 +-
# 0.012 and 1.00 +- 0.014 (benchmarks/diversity_measures.py --spread, 12 seeds). The reference is every training
# image (below), the same for every run on the data whatever its seed.
DIVERSITY_MAX = 1024
# The real side of the diversity and class figures is every training image, up to this many (a seeded random subset
# beyond), not the monitor's own 1,024 rows. On cxr_real_64 (3,632 training images) a DCGAN checkpoint (step 1,000)
# read 0.777 +- 0.011 over five monitor draws when each draw's own rows were its reference and 0.778 +- 0.006 against
# every training image (benchmarks/long_runs.py --spread); real images scored as if generated, 0.986 +- 0.015 and
# 0.986 +- 0.011 (worst class, 12 seeds; benchmarks/diversity_measures.py --spread). The mean distance is unbiased at
# any size, so the ratio keeps its scale; what goes is the offset a run's seed put on all of its figures.
REFERENCE_MAX = 8192
MIN_SHARE = 0.1  # a class below this share of real images is not scored for coverage
COVERAGE_NOTE_BELOW = 0.8


def quality_space(spec: str, ds: PreparedDataset, recorded: dict | None = None) -> FeatureSpace:
    """The feature space for training-time quality: ``randconv``, an extractor directory, or ``auto``.

    ``recorded`` (from ``run.json`` on resume) pins the space the run started with, so figures stay comparable."""
    if recorded:
        if recorded.get("ident") == randconv_space().ident:
            return randconv_space()
        path = recorded.get("path")
        if not path or not (Path(path) / "extractor.json").is_file():
            raise CxrganError(f"this run measured quality in feature space {recorded.get('ident')} at {path}, which is gone; "
                              "restore it (cxrgan features train) or start a new run")
        return load_extractor(path)
    if spec == "randconv":
        return randconv_space()
    if spec != "auto":
        return load_extractor(spec)
    space = cached_extractor(ds, "classifier")
    if space is None:
        return randconv_space()
    check = cached_check(ds, space, run_if_missing=False)
    if check is None or not check.passed:
        log.info("feature space %s is %s; checkpoints are selected in randconv-v1", space.ident,
                 "not validated yet (cxrgan evaluate --check-features)" if check is None else "failed its distortion check")
        return randconv_space()
    return space


def space_record(space: FeatureSpace, ds: PreparedDataset) -> dict:
    """What ``run.json`` keeps of the quality space."""
    from ..evaluate.extractors import cached_dir

    path = None if space.kind == "randconv" else str(cached_dir(ds) / space.kind)
    return {"ident": space.ident, "path": space.info.get("path", path)}


class QualityMonitor:
    """Holds real-image statistics and fixed latents; ``evaluate`` scores a generator on them.

    Diversity is measured within groups: per class for a conditional family (between-class distances would
    hide a generator that draws one image per class), else over all images. Each group holds every monitor row of its
    class, up to ``group_max`` of them in random order (not the first rows: prepared data are often sorted by class).

    The samples are compared with the monitor's ``n`` real rows for FD, precision and recall and the Vendi ratio
    (figures that depend on how many images each side has), and with a larger *reference* for the mean distance and
    the class figures (which do not): every training image, or ``reference_max`` of them drawn by the seed where
    there are more; ``reference_max=0`` makes the monitor's rows the reference (an older convention, kept for comparisons)."""

    def __init__(self, data: TrainData, n: int, latents: int | Callable[..., torch.Tensor], seed: int, device: torch.device,
                 space: FeatureSpace | None = None, conditional: bool = False, group_max: int = DIVERSITY_MAX,
                 reference_max: int = REFERENCE_MAX, real_view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """``latents``: the latent width (N(0, I) latents) or the family's ``sample_z(n, generator=...)``;
        ``real_view``: the family's :meth:`~cxrgan.models.base.Family.real_view`, applied to real images before they
        are embedded."""
        g = np.random.default_rng([seed, 99])
        rows = np.sort(g.choice(len(data), size=min(n, len(data)), replace=False))
        self.rows = rows  # the real images' rows in ``data``
        self.device = device
        self.space = (space or randconv_space()).to(device)
        if reference_max <= 0 or len(rows) == len(data):
            self.reference_rows = rows
        elif len(data) <= reference_max:
            self.reference_rows = np.arange(len(data))
        else:
            self.reference_rows = np.sort(np.random.default_rng([seed, 98]).choice(len(data), size=reference_max, replace=False))
        ref_feats, ref_pred = _embed_rows(data, self.reference_rows, self.space, real_view)
        at = np.minimum(np.searchsorted(self.reference_rows, rows), len(self.reference_rows) - 1)
        if np.array_equal(self.reference_rows[at], rows):  # the monitor's rows are in the reference: embedded once
            self.real_feats, real_pred = ref_feats[at], None if ref_pred is None else ref_pred[at]
        else:
            self.real_feats, real_pred = _embed_rows(data, rows, self.space, real_view)
        gen = torch.Generator().manual_seed(seed * 1000 + 17)
        self.z = torch.randn(len(rows), latents, generator=gen) if isinstance(latents, int) else latents(len(rows), generator=gen)
        self.y = torch.from_numpy(data.labels[rows])
        order = g.permutation(len(rows))
        if conditional:
            labels = self.y.numpy()[order]
            groups = {int(c): order[labels == c][:group_max] for c in np.unique(labels)}
            self.groups = {c: idx for c, idx in groups.items() if len(idx) >= 2} or {-1: order[:group_max]}
        else:
            self.groups = {-1: order[:group_max]}
        self.group_real_vendi = {c: vendi_score(self.real_feats[idx]) for c, idx in self.groups.items()}
        if self.reference_rows is rows:  # each group's own real rows, as the samples are grouped
            self.group_real = {c: mean_pairwise_distance(self.real_feats[idx]) for c, idx in self.groups.items()}
        else:
            ref_y = data.labels[self.reference_rows]
            self.group_real = {c: mean_pairwise_distance(ref_feats if c == -1 else ref_feats[ref_y == c]) for c in self.groups}
        self.diversity_real = float(np.mean(list(self.group_real.values())))
        self.real_share = None if conditional else class_shares(ref_pred, self.space)
        self.group_max = group_max
        # conditional: each monitor row's label as the space's class index (-1: a class the space does not know)
        self._labels = _space_labels(data, rows, self.class_names) if conditional and real_pred is not None else None
        ref_labels = _space_labels(data, self.reference_rows, self.class_names) if self._labels is not None else None
        self._scored: list[int] = []
        if self.real_share is not None:
            self._scored = [int(c) for c in np.flatnonzero(self.real_share >= MIN_SHARE)]
        elif ref_labels is not None:
            agree = [c for c in np.unique(ref_labels) if c >= 0 and int(((ref_labels == c) & (ref_pred == c)).sum()) >= 2]
            self._scored = [int(c) for c in agree] if len(agree) >= 2 else []
        if self._scored:
            cap = group_max if self.reference_rows is rows else len(self.reference_rows)  # as the samples' groups, or all
            self._real_layout = _class_layout(ref_feats, ref_pred, self._scored, ref_labels, cap)
            if ref_labels is not None:
                self._real_agreement = {c: float((ref_pred[ref_labels == c] == c).mean()) for c in self._scored}

    @property
    def classes_scored(self) -> list[int]:
        """The classes (the space's indices) that the class figures cover: for an unconditional monitor those holding
        at least ``MIN_SHARE`` of real images, for a conditional one the labels whose real images the space's
        classifier puts in that class at least twice; empty where the space has no class head or fewer than two."""
        return list(self._scored)

    def class_breakdown(self, feats: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
        """Samples' features and predicted classes in (in the monitor's row order), the parts of their diversity out,
        per scored class by name: ``within``, the diversity of the samples in the class over real's (nan below two
        samples), where a sample is in a class when the space's classifier puts it there and, for a conditional
        monitor, it was also drawn for that class; ``share`` (unconditional: the class's share of the samples) or
        ``agreement`` (conditional: the share of the samples drawn for the class that the classifier puts in it);
        ``separation``, the mean distance between the class centroids over real's (0 when the samples fall in
        fewer than two classes); and ``drift``, per class that holds samples, how far their centroid has moved from
        the real class's towards the other real classes, as a share of the distance to them (0: none; 0.5: halfway),
        which says which class the lost separation belongs to."""
        if not self._scored:
            raise ValueError("class_breakdown needs a monitor whose feature space classifies at least two of its classes")
        fake_within, fake_sep, fake_centroids = _class_layout(feats, predicted, self._scored, self._labels, self.group_max)
        real_within, real_sep, real_centroids = self._real_layout
        names = self.class_names
        parts: dict[str, object] = {"within": {names[c]: fake_within[c] / real_within[c] for c in self._scored},
                                    "separation": fake_sep / real_sep if math.isfinite(fake_sep) else 0.0,
                                    "drift": {names[c]: d for c, d in _drift(fake_centroids, real_centroids).items()}}
        if self._labels is None:
            shares = np.bincount(predicted, minlength=len(names)) / max(len(predicted), 1)
            parts["share"] = {names[c]: float(shares[c]) for c in self._scored}
        else:
            parts["agreement"] = {names[c]: float((predicted[self._labels == c] == c).mean()) for c in self._scored}
        return parts

    @property
    def class_names(self) -> list[str]:
        return list(self.space.info.get("class_names", []))

    def score(self, fakes: torch.Tensor) -> dict[str, float]:
        """The figures of :meth:`score_parts`."""
        return self.score_parts(fakes)[0]

    def score_parts(self, fakes: torch.Tensor) -> tuple[dict[str, float], dict[str, object] | None]:
        """Figures for images ``(N, 1, S, S)`` in [-1, 1], generated for this monitor's ``z`` and ``y`` in order.

        ``fd``; ``diversity`` and ``diversity_real`` (mean pairwise feature distance, averaged over the groups);
        ``diversity_ratio``: the worst group's synthetic-to-real diversity (1 = as varied as real images);
        ``vendi_ratio``: the worst group's synthetic-to-real effective number of distinct images; ``precision`` and
        ``recall`` (Kynkäänniemi et al. 2019, k = 5, all samples against all the monitor's real images): the share of
        samples inside the real images' neighbourhoods, and of real images inside the samples'. In a classifier
        space (:attr:`classes_scored` not empty) also ``class_within_ratio`` (the worst class's ``within`` of
        :meth:`class_breakdown`) and ``class_separation``; for an unconditional monitor ``class_coverage`` with the
        class it concerns (``coverage_class``) and that class's share of the samples and of real images; for a
        conditional one ``label_agreement``: the worst class's share of samples drawn for it that the classifier
        puts in it, over the same share of real images (1: as often as real images, at most 1). Second: the
        :meth:`class_breakdown` those class figures come from, or ``None`` outside a classifier space."""
        if len(fakes) != len(self.z):
            raise ValueError(f"score needs {len(self.z)} images, one per monitor latent; got {len(fakes)}")
        feats = self.space.embed(fakes)
        fake_div = {c: mean_pairwise_distance(feats[idx]) for c, idx in self.groups.items()}
        ratio = min(fake_div[c] / max(self.group_real[c], 1e-12) for c in self.groups)
        vendi = min(vendi_score(feats[idx]) / self.group_real_vendi[c] for c, idx in self.groups.items())
        pr = prdc(self.real_feats, feats, k=5) if min(len(feats), len(self.real_feats)) > 5 else {}
        out = {"fd": frechet_distance(feats, self.real_feats), "diversity": float(np.mean(list(fake_div.values()))),
               "diversity_real": self.diversity_real, "diversity_ratio": ratio, "vendi_ratio": vendi,
               **{k: pr[k] for k in ("precision", "recall") if k in pr}}
        if not self._scored:
            return out, None
        parts = self.class_breakdown(feats, self.space.classify(fakes))
        within = [v for v in parts["within"].values() if math.isfinite(v)]
        out.update(class_within_ratio=min(within) if within else 0.0, class_separation=parts["separation"])
        names = self.class_names
        if self.real_share is not None:
            share = {c: parts["share"][names[c]] for c in self._scored}
            covered = {c: min(1.0, share[c] / self.real_share[c]) for c in self._scored}
            worst = min(covered, key=covered.get)
            out.update(class_coverage=covered[worst], coverage_class=names[worst],
                       coverage_share=share[worst], coverage_real_share=float(self.real_share[worst]))
        else:
            agreed = {c: min(1.0, parts["agreement"][names[c]] / max(self._real_agreement[c], 1e-12)) for c in self._scored}
            out["label_agreement"] = min(agreed.values())
        return out, parts

    @torch.no_grad()
    def samples(self, generate) -> torch.Tensor:
        """``generate(z, y) -> images`` in [-1, 1], called on this monitor's latents; the images, on the CPU."""
        return torch.cat([generate(self.z[i : i + 64].to(self.device), self.y[i : i + 64].to(self.device)).float().cpu()
                          for i in range(0, len(self.z), 64)])  # small chunks: the peak memory of a run is set here

    def evaluate(self, generate) -> dict[str, float]:
        """``generate(z, y) -> images`` in [-1, 1]; returns the figures of :meth:`score` for :meth:`samples`."""
        return self.score(self.samples(generate))


def _embed_rows(data: TrainData, rows: np.ndarray, space: FeatureSpace, view: Callable[[torch.Tensor], torch.Tensor] | None = None,
                chunk: int = 512) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and the space's predicted classes (``None`` without a class head) of ``data``'s ``rows`` (seen
    through ``view`` when given), a chunk of images at a time (the reference can be thousands)."""
    feats, preds = [], []
    for i in range(0, len(rows), chunk):
        x = to_model_range(torch.from_numpy(data.uint8(rows[i : i + chunk])))
        x = view(x) if view is not None else x
        feats.append(np.asarray(space.embed(x)))
        preds.append(space.classify(x))
    return np.concatenate(feats), None if preds[0] is None else np.concatenate(preds)


def _space_labels(data: TrainData, rows: np.ndarray, space_names: list[str]) -> np.ndarray | None:
    """The labels of ``data``'s ``rows`` as indices of the space's classes, matched by name (-1 where the space lacks
    the class); ``None`` for multi-label data, whose rows carry no single class."""
    if data.dataset.multilabel:
        return None
    index = {name: i for i, name in enumerate(space_names)}
    to_space = np.array([index.get(name, -1) for name in data.dataset.class_names], np.int64)
    return to_space[data.labels[rows]]


def _class_layout(feats: np.ndarray, predicted: np.ndarray, classes: list[int], labels: np.ndarray | None = None,
                  group_max: int = DIVERSITY_MAX) -> tuple[dict[int, float], float, dict[int, np.ndarray]]:
    """Per class, the mean pairwise distance of its first ``group_max`` rows predicted in it (and labelled with it,
    given ``labels``; nan below two rows); the mean distance between the centroids of the classes that hold rows
    (nan when fewer than two do); and those centroids by class."""
    within, centroids = {}, {}
    for c in classes:
        member = predicted == c if labels is None else (predicted == c) & (labels == c)
        rows = np.asarray(feats)[member][:group_max]
        within[c] = mean_pairwise_distance(rows) if len(rows) >= 2 else float("nan")
        if len(rows):
            centroids[c] = rows.mean(axis=0)
    if len(centroids) < 2:
        return within, float("nan"), centroids
    held = list(centroids.values())
    gaps = [float(np.linalg.norm(a - b)) for i, a in enumerate(held) for b in held[i + 1 :]]
    return within, float(np.mean(gaps)), centroids


def _drift(fake: dict[int, np.ndarray], real: dict[int, np.ndarray]) -> dict[int, float]:
    """Per class held by both, how far the samples' centroid has moved from real's towards the other real classes:
    its displacement projected on the line to each other class's real centroid, as a share of that distance,
    averaged over those classes (0: where real images sit; 0.5: halfway to the other class; negative: away)."""
    out = {}
    for c, f in fake.items():
        if c not in real:
            continue
        shares = []
        for o in real:
            if o != c:
                line = real[o] - real[c]
                shares.append(float((f - real[c]) @ line / max(float(line @ line), 1e-24)))
        out[c] = float(np.mean(shares)) if shares else float("nan")
    return out


def class_shares(predicted: np.ndarray | None, space: FeatureSpace) -> np.ndarray | None:
    """The share of each class among real images as the space's classifier labels them, where at least two
    classes each hold ``MIN_SHARE`` (below that a class is mostly the classifier's errors); else ``None``."""
    if predicted is None or not len(predicted):
        return None
    share = np.bincount(predicted, minlength=len(space.info.get("class_names", []))) / len(predicted)
    return share if int((share >= MIN_SHARE).sum()) >= 2 else None


def coverage_note(figures: dict) -> str:
    """A phrase naming the class that an unconditional generator under-draws, or ``""``."""
    if figures.get("class_coverage") is None or figures["class_coverage"] >= COVERAGE_NOTE_BELOW:
        return ""
    return (f"; the samples under-represent {figures['coverage_class']}: {100 * figures['coverage_share']:.0f}% of them "
            f"against {100 * figures['coverage_real_share']:.0f}% of real images (class coverage {figures['class_coverage']:.2f})")


def diversity_ratio(figures: dict) -> float:
    """Synthetic-to-real diversity of a metrics row (older rows have no ``diversity_ratio``: pooled figures)."""
    value = figures.get("diversity_ratio")
    if value not in (None, ""):
        return float(value)
    return float(figures["diversity"]) / max(float(figures["diversity_real"]), 1e-12)


def health(figures: dict) -> tuple[float, str]:
    """The lower of a metrics row's diversity ratio and Vendi ratio (rows before the Vendi ratio: the diversity
    ratio), with what it measures in words, for messages."""
    spread = diversity_ratio(figures)
    modes = figures.get("vendi_ratio")
    if modes in (None, "") or float(modes) >= spread:
        return spread, "sample diversity"
    return float(modes), "the effective number of distinct samples"


def eligible(figures: dict, collapse_ratio: float) -> bool:
    """May a checkpoint with these figures be the best? Only with a finite FD and a health figure >= the ratio."""
    return math.isfinite(float(figures["fd"])) and health(figures)[0] >= collapse_ratio


def fd_chooses(space: FeatureSpace) -> bool:
    """May FD in ``space`` pick the best checkpoint? Not in the fixed ``randconv-v1``, the fallback of a dataset with
    no validated space: it fails the distortion check (blur lowers its FD, a dropped class hardly moves it), and in
    the demo its lowest FD fell on the CGAN's step 200, whose samples are noise, against a radiograph-like step 600.
    On real radiographs the last checkpoint also transferred better than randconv's lowest FD (TSTR ROC AUC 0.956
    against 0.945, docs/results/evaluation, "Checkpoint selection")."""
    return space.kind != "randconv"


def better(figures: dict[str, float], best: dict, collapse_ratio: float, key: str = "fd", higher: bool = False) -> bool:
    """Does a checkpoint with ``figures`` replace ``best`` (``{"step", "fd"[, "key", "value"]}``) under the selection
    rule? The figure compared is ``key`` (lower wins, or higher with ``higher``): FD unless the family selects on
    a figure of its own (dgm: the validation ROC AUC of its anomaly scores)."""
    value = figures.get(key)
    if not eligible(figures, collapse_ratio) or value is None or not math.isfinite(value):
        return False
    if best.get("step") is None:
        return True
    old = best.get("value", best.get("fd")) if best.get("key", "fd") == key else None
    return old is None or (value > old if higher else value < old)
