"""The distortion check on phantom data, the checkpoint-selection rule, and collapse handling in the loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cxrgan.data import PreparedDataset
from cxrgan.evaluate.extractors import FeatureSpace, randconv_space
from cxrgan.evaluate.validation import STRENGTHS, check_space, distort
from cxrgan.train.data import TrainData
from cxrgan.train.loop import train
from cxrgan.train.quality import QualityMonitor, better
from cxrgan.utils.tensors import to_model_range
from tests.evaluate.helpers import BrightnessClassifier
from tests.train.helpers import tiny_config


def test_distortions_change_images_in_proportion(phantom32):
    ds = PreparedDataset.open(phantom32)
    x = np.asarray(ds.images[:40])
    for kind, strengths in STRENGTHS.items():
        diffs = [np.abs(distort(x, kind, s, labels=np.asarray(ds.labels[:40])).astype(float) - x).mean() for s in strengths]
        assert diffs[-1] > diffs[0] > 0 or kind == "mode_drop", (kind, diffs)


def test_randconv_check_on_phantoms_fd_rises_with_blur_and_noise(phantom32):
    res = check_space(randconv_space(), PreparedDataset.open(phantom32), max_images=300)
    for kind in ("blur", "salt_pepper", "occlusion"):
        fd = [r["fd"] for r in res.rows if r["distortion"] in ("none", kind)]
        assert len(fd) == 5 and all(b > a for a, b in zip(fd, fd[1:])), (kind, fd)
    # mild noise hardly moves globally pooled random features at 32 px; strong noise must
    noise = [r["fd"] for r in res.rows if r["distortion"] in ("none", "noise")]
    assert noise[-1] > 5 * noise[0] and noise[-1] > noise[-2]
    assert "FD" in res.table()


class _Blind(nn.Module):
    """A feature space that ignores its input: the check must fail it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4), requires_grad=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(len(x))
        return torch.randn(len(x), 4, generator=g) * self.w


def test_check_fails_a_space_blind_to_the_images(phantom32):
    res = check_space(FeatureSpace(_Blind(), "blind", "blind-0"), PreparedDataset.open(phantom32), max_images=200)
    assert not res.passed and any("FD does not rise" in f for f in res.failures)


def test_blurry_low_diversity_checkpoint_is_not_chosen_over_sharp_diverse_one(phantom32):
    """The demo's case: a blurrier checkpoint with a third of the real diversity must lose to a sharper one."""
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds)
    mon = QualityMonitor(data, 128, 8, 0, torch.device("cpu"))
    real = np.asarray(data.images[128:256])
    sharp = to_model_range(torch.from_numpy(real))
    few = np.repeat(real[:1], 128, axis=0)  # one image: no diversity
    blurry = to_model_range(torch.from_numpy(distort(few, "blur", 1.0)))
    s_sharp, s_blurry = mon.score(sharp), mon.score(blurry)
    assert s_blurry["diversity_ratio"] < 0.5 < s_sharp["diversity_ratio"]
    best = {"step": None, "fd": float("inf")}
    assert better(s_blurry, best, 0.5) is False  # whatever its FD, not eligible
    assert better(s_sharp, best, 0.5) is True
    assert better(s_blurry, {"step": 1, "fd": s_sharp["fd"]}, 0.5) is False


def test_the_monitor_sees_real_images_through_the_family_view(phantom32):
    """A family whose outputs live in a frame of their own (a standardizing dgm) has real images compared in that
    frame: the view is applied before they are embedded."""
    data = TrainData(PreparedDataset.open(phantom32))
    plain = QualityMonitor(data, 128, 8, 0, torch.device("cpu"))
    flat = QualityMonitor(data, 128, 8, 0, torch.device("cpu"), real_view=lambda x: torch.zeros_like(x))
    assert plain.diversity_real > 0 and flat.diversity_real == 0
    assert not np.allclose(plain.real_feats, flat.real_feats)


def test_conditional_diversity_is_measured_within_each_class_on_a_random_subset(phantom32):
    """Prepared data are often sorted by class. The diversity groups must still cover every class (not the first
    128 rows, which would all be one class), and a generator that draws one image per class must score near 0
    even though its pooled, between-class diversity is large."""
    ds = PreparedDataset.open(phantom32)
    data = TrainData(ds)
    order = np.argsort(data.labels, kind="stable")  # a class-sorted view of the same data
    data.labels, rows = data.labels[order], order
    data.uint8 = lambda r, _u=data.uint8: _u(rows[r])  # type: ignore[method-assign]
    mon = QualityMonitor(data, 512, 8, 0, torch.device("cpu"), conditional=True)
    assert set(mon.groups) == set(np.unique(data.labels).tolist())
    y_all = mon.y.numpy()  # every monitor sample of a class is scored (not a subset: 128 gave the figure a spread of 0.04)
    assert {c: len(idx) for c, idx in mon.groups.items()} == {int(c): int((y_all == c).sum()) for c in np.unique(y_all)}
    assert all((y_all[idx] == c).all() for c, idx in mon.groups.items())
    real = to_model_range(torch.from_numpy(data.uint8(np.arange(len(data)))))
    y = mon.y.numpy()
    per_class = {int(c): real[int(np.flatnonzero(data.labels == c)[5])] for c in np.unique(y)}
    one_per_class = torch.stack([per_class[int(c)] for c in y])
    s = mon.score(one_per_class)
    assert s["diversity_ratio"] < 0.05
    pooled = QualityMonitor(data, 512, 8, 0, torch.device("cpu"), conditional=False).score(one_per_class)
    assert pooled["diversity_ratio"] > 0.3  # what an unconditional, pooled figure would have let through
    matched = torch.stack([real[int(np.flatnonzero(data.labels == c)[k % 40])] for k, c in enumerate(y)])
    assert mon.score(matched)["diversity_ratio"] > 0.6


def test_constant_generator_is_flagged_excluded_from_best_and_sampled_from_last(phantom32, tmp_path, caplog):
    """A generator forced to a constant image: the collapse warning fires, no checkpoint becomes best."""
    from cxrgan.sample import load_run

    def flatten_generator(step, stats, holder={}):
        pass

    cfg = tiny_config(phantom32, "dcgan", "steps=6", "collapse_warmup=0", "ema_decay=0")
    run = tmp_path / "const"
    import cxrgan.train.loop as loop

    orig = loop.build_family

    def constant_family(*a, **k):
        fam = orig(*a, **k)
        last = [m for m in fam.G.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
        last.weight.data.zero_()
        last.weight.requires_grad_(False)  # G's output stays tanh(0) = 0: one grey image for every z
        return fam

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_family", constant_family)
        with caplog.at_level("INFO", logger="cxrgan.train"):
            res = train(cfg, run, progress=False)
    assert res.collapse_step == 3
    assert "possible mode collapse at step 3" in caplog.text and "not eligible as best" in caplog.text
    assert res.best_step is None and not (run / "checkpoints" / "best.json").exists()
    assert load_run(run, "best").step == 6  # sample's default falls back to the last checkpoint


def test_best_json_says_why(phantom32, tmp_path, caplog):
    """In randconv-v1 (no validated space), FD does not choose: the latest healthy checkpoint is best, whatever its
    FD, and best.json says so and how to select on FD instead; the log explains it once."""
    caplog.set_level("INFO", logger="cxrgan.train")
    res = train(tiny_config(phantom32, "dcgan", "collapse_ratio=0"), tmp_path / "r", progress=False)
    assert caplog.text.count("best checkpoint is now") >= 2 and caplog.text.count("does not choose") == 1
    info = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    assert info["step"] == res.best_step == res.step and info["space"] == "randconv-v1"
    assert "latest" in info["reason"] and "does not choose" in info["reason"] and "cxrgan features train" in info["reason"]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["quality_space"]["ident"] == "randconv-v1"


def test_fd_chooses_in_a_validated_space_only():
    from cxrgan.train.quality import fd_chooses

    assert not fd_chooses(randconv_space())
    assert fd_chooses(FeatureSpace(nn.Linear(2, 2), "classifier", "classifier-x"))


def test_diversity_reference_is_every_training_image_whatever_the_seed(phantom32):
    """The real side of the mean distance is every training image (up to ``reference_max``), so monitors with
    other seeds and sizes share it exactly, where their own rows' figures differ; with ``reference_max=0`` it is the
    monitor's rows, as before. Real images read about 1 against either. A cap below the training set draws that many
    rows by the seed."""
    from cxrgan.evaluate.distribution import mean_pairwise_distance

    data = TrainData(PreparedDataset.open(phantom32))
    a, b = (QualityMonitor(data, n, 8, seed, torch.device("cpu")) for n, seed in ((128, 0), (256, 1)))
    assert np.array_equal(a.reference_rows, np.arange(len(data))) and np.array_equal(b.reference_rows, a.reference_rows)
    every = a.space.embed(to_model_range(torch.from_numpy(data.uint8(np.arange(len(data))))))
    assert a.diversity_real == b.diversity_real == pytest.approx(mean_pairwise_distance(every), rel=1e-6)
    old_a, old_b = (QualityMonitor(data, n, 8, seed, torch.device("cpu"), reference_max=0) for n, seed in ((128, 0), (256, 1)))
    assert np.array_equal(old_a.reference_rows, old_a.rows) and old_a.diversity_real != old_b.diversity_real
    assert old_a.diversity_real == pytest.approx(mean_pairwise_distance(old_a.real_feats), rel=1e-9)
    others = to_model_range(torch.from_numpy(data.uint8(np.setdiff1d(np.arange(len(data)), a.rows)[:128])))
    assert 0.85 < a.score(others)["diversity_ratio"] < 1.15 and 0.85 < old_a.score(others)["diversity_ratio"] < 1.15
    capped = [QualityMonitor(data, 64, 8, seed, torch.device("cpu"), reference_max=200).reference_rows for seed in (0, 0, 1)]
    assert len(capped[0]) == 200 and np.array_equal(capped[0], capped[1]) and not np.array_equal(capped[0], capped[2])
    assert np.all(np.diff(capped[0]) > 0)


def test_unconditional_monitor_reports_the_class_its_samples_under_draw(phantom32):
    """An unconditional generator that draws only one kind of image has class coverage near 0 for the other kind,
    named in the figures and in the log's note; real images drawn in proportion cover every class."""
    from cxrgan.train.quality import coverage_note

    data = TrainData(PreparedDataset.open(phantom32))
    real = to_model_range(torch.from_numpy(data.uint8(np.arange(len(data)))))
    cut = float(real.mean(dim=(1, 2, 3)).median())
    space = FeatureSpace(BrightnessClassifier(cut), "classifier", "bright-0", {"class_names": ["DARK", "BRIGHT"]})
    mon = QualityMonitor(data, 256, 8, 0, torch.device("cpu"), space)
    assert mon.real_share is not None and min(mon.real_share) > 0.3
    shuffled = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:256]]
    assert mon.score(shuffled)["class_coverage"] > 0.8
    bright = real[real.mean(dim=(1, 2, 3)) > cut]
    s = mon.score(bright[torch.arange(256) % len(bright)])
    assert s["class_coverage"] == 0.0 and s["coverage_class"] == "DARK" and s["coverage_share"] == 0.0
    assert "under-represent DARK: 0% of them" in coverage_note(s)
    assert "class_coverage" not in QualityMonitor(data, 256, 8, 0, torch.device("cpu"), space, conditional=True).score(shuffled)
    assert "class_coverage" not in QualityMonitor(data, 256, 8, 0, torch.device("cpu")).score(shuffled)  # randconv: no classes


class _LookupClassifier(nn.Module):
    """A stand-in for a perfect classifier on real images: each image takes the label of its nearest real image,
    and its features are that label, one-hot and scaled, beside its mean and spread."""

    def __init__(self, real: torch.Tensor, labels: np.ndarray, classes: int) -> None:
        super().__init__()
        self.real = nn.Parameter(real.flatten(1), requires_grad=False)
        self.register_buffer("onehot", torch.eye(classes)[torch.from_numpy(labels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.onehot[torch.cdist(x.flatten(1), self.real).argmin(1)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([3 * self(x), x.mean(dim=(1, 2, 3))[:, None], x.std(dim=(1, 2, 3))[:, None]], dim=1)


def test_conditional_monitor_sees_samples_that_leave_their_class(phantom32):
    """A conditional generator whose samples ignore their class reads more varied than real within each class (the
    gap between classes counts as variety there); the label agreement shows the leak, and the within-class ratio,
    taken on the samples the classifier puts in the class they were drawn for, stays near real's. Samples drawn
    from their own class read about 1 on all three."""
    data = TrainData(PreparedDataset.open(phantom32))
    real = to_model_range(torch.from_numpy(data.uint8(np.arange(len(data)))))
    names = list(data.dataset.class_names)
    space = FeatureSpace(_LookupClassifier(real, data.labels, len(names)), "classifier", "lookup-0", {"class_names": names})
    mon = QualityMonitor(data, 256, 8, 0, torch.device("cpu"), space, conditional=True)
    assert mon.classes_scored == [0, 1, 2]
    rng = np.random.default_rng(3)
    own = real[[rng.choice(np.flatnonzero(data.labels == int(c))) for c in mon.y]]
    anyclass = real[rng.choice(len(real), size=len(mon.y))]
    s_own, s_any = mon.score(own), mon.score(anyclass)
    assert s_own["label_agreement"] == 1.0 and 0.8 < s_own["class_within_ratio"] < 1.25 and 0.8 < s_own["diversity_ratio"] < 1.25
    assert s_any["label_agreement"] < 0.6 and s_any["diversity_ratio"] > 1.5 * s_own["diversity_ratio"]
    assert 0.75 < s_any["class_within_ratio"] < 1.33
    assert set(mon.class_breakdown(space.embed(own), space.classify(own))["agreement"]) == set(names)


def test_unconditional_monitor_splits_pooled_diversity_into_its_parts(phantom32):
    """Samples whose classes sit closer together than real ones (each class shifted halfway towards the boundary,
    its own spread kept) lose pooled diversity although each class is as varied as real: the class separation
    shows it, the within-class ratio does not, and each class's drift says which class moved. Real images score about
    1 on both."""
    data = TrainData(PreparedDataset.open(phantom32))
    real = to_model_range(torch.from_numpy(data.uint8(np.arange(len(data)))))
    cut = float(real.mean(dim=(1, 2, 3)).median())
    space = FeatureSpace(BrightnessClassifier(cut), "classifier", "bright-0", {"class_names": ["DARK", "BRIGHT"]})
    mon = QualityMonitor(data, 256, 8, 0, torch.device("cpu"), space)
    same = mon.score(real[torch.randperm(len(real), generator=torch.Generator().manual_seed(1))[:256]])
    assert 0.8 < same["class_separation"] < 1.25 and 0.8 < same["class_within_ratio"] < 1.25
    gap = real.mean(dim=(1, 2, 3)) - cut
    pick = real[gap.abs() > gap.abs().median()]  # far from the cut, so every image keeps its class when shifted
    means = pick.mean(dim=(1, 2, 3))
    bright = means > cut
    closer = pick.clone()
    for side in (bright, ~bright):
        closer[side] -= 0.5 * (means[side].mean() - cut)
    assert torch.equal(closer.mean(dim=(1, 2, 3)) > cut, bright)
    s, ref = mon.score(closer[torch.arange(256) % len(closer)]), mon.score(pick[torch.arange(256) % len(pick)])
    assert s["class_separation"] < 0.75 * ref["class_separation"]
    assert abs(s["class_within_ratio"] - ref["class_within_ratio"]) < 0.1
    assert s["diversity_ratio"] < ref["diversity_ratio"]
    parts = mon.class_breakdown(space.embed(closer), space.classify(closer))
    assert set(parts["share"]) == {"DARK", "BRIGHT"} and abs(sum(parts["share"].values()) - 1) < 1e-9
    one = mon.class_breakdown(space.embed(closer[bright]), space.classify(closer[bright]))
    assert one["separation"] == 0.0 and math.isnan(one["within"]["DARK"])
    # drift names the class that moved: only the dark images shifted towards the cut
    dark_only = torch.where(bright[:, None, None, None], pick, closer)
    moved = mon.class_breakdown(space.embed(dark_only), space.classify(dark_only))["drift"]
    kept = mon.class_breakdown(space.embed(pick), space.classify(pick))["drift"]
    assert moved["DARK"] - kept["DARK"] > 0.15 and abs(moved["BRIGHT"] - kept["BRIGHT"]) < 0.02
