"""The shift protocol: acquisition shifts do what they say at their named strengths, the protocol's test
conditions, external test sets, the held-out acquisition cluster, and the studies measured under shift."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.data.acquisition import (KINDS, STRENGTHS, AcquisitionParams, acquisition_features, apply, one_kind,
                                     random_params, shift_images)
from cxrgan.data.dataset import write_subset
from cxrgan.data.splits import leaky_groups
from cxrgan.errors import CxrganError
from cxrgan.evaluate.classifier import ClassifierConfig
from cxrgan.evaluate.shift import (IN_DISTRIBUTION, cluster_split, external_test, parse_shifts, summarize_conditions,
                                   protocol_conditions)
from cxrgan.studies.usefulness import augment_study, tstr
from tests.conftest import radiograph

TINY = ClassifierConfig(width=4, epochs=2, batch_size=32, device="cpu")


def _images(n: int = 12, s: int = 48) -> np.ndarray:
    return np.stack([(radiograph(s, s, seed=i) * 255).astype(np.uint8) for i in range(n)])


def _grad(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return np.abs(np.diff(x, axis=1)).mean((1, 2)) + np.abs(np.diff(x, axis=2)).mean((1, 2))


def test_identity_parameters_change_nothing():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    assert torch.allclose(apply(x, AcquisitionParams.identity(4)), x, atol=1e-6)


def test_exposure_and_contrast_move_each_image_one_way_or_the_other():
    x = _images()
    for kind, stat in (("exposure", lambda a: a.astype(np.float32).mean((1, 2))),
                       ("contrast", lambda a: a.astype(np.float32).std((1, 2)))):
        y = shift_images(x, kind, "strong", seed=1)
        moved = stat(y) - stat(x)
        assert (moved > 1).any() and (moved < -1).any(), kind  # both directions in one set
        assert (np.abs(moved) > 1).all(), kind  # and every image moved
        assert np.array_equal(y, shift_images(x, kind, "strong", seed=1))  # the same seed, the same set
        assert not np.array_equal(y, shift_images(x, kind, "strong", seed=2))


def test_sharpness_blurs_some_images_and_sharpens_the_others():
    x = _images(16)
    g = torch.Generator().manual_seed(3)
    p = one_kind(16, "sharpness", STRENGTHS["sharpness"]["strong"], g)
    assert (p.sharpness < 0).any() and (p.sharpness > 0).any()
    y = shift_images(x, "sharpness", "strong", seed=3)
    change = _grad(y) - _grad(x)
    assert (change[p.sharpness.numpy() < 0] < 0).all() and (change[p.sharpness.numpy() > 0] > 0).all()


def test_positioning_moves_the_content_by_the_stated_amount():
    s = 64
    yy, xx = np.mgrid[0:s, 0:s]
    disk = ((yy - s / 2 + 0.5) ** 2 + (xx - s / 2 + 0.5) ** 2 < 10**2).astype(np.float32)
    x = torch.from_numpy(disk * 2 - 1)[None, None].repeat(2, 1, 1, 1)
    p = AcquisitionParams.identity(2)
    p.dx, p.dy = torch.tensor([0.1, 0.0]), torch.tensor([0.0, -0.1])
    moved = (apply(x, p)[:, 0].numpy() + 1) / 2
    cy, cx = [(moved * g).sum((1, 2)) / moved.sum((1, 2)) for g in (yy, xx)]
    assert cx[0] - cx[1] == pytest.approx(0.1 * s, abs=0.5)  # right by a tenth of the side
    assert cy[0] - cy[1] == pytest.approx(0.1 * s, abs=0.5)  # the second one up by a tenth
    p = AcquisitionParams.identity(2)
    p.zoom = torch.tensor([1.2, 1 / 1.2])
    area = ((apply(x, p)[:, 0].numpy() + 1) / 2).sum((1, 2))
    assert area[0] / disk.sum() == pytest.approx(1.2**2, rel=0.05) and area[1] / disk.sum() == pytest.approx(1.2**-2, rel=0.05)
    bar = np.zeros((s, s), np.float32)
    bar[8:56, 30:34] = 1
    p = AcquisitionParams.identity(1)
    p.angle = torch.tensor([90.0])
    turned = (apply(torch.from_numpy(bar * 2 - 1)[None, None], p)[0, 0].numpy() + 1) / 2
    assert turned[30:34, 8:56].mean() > 0.8 and turned[8:28, 30:34].mean() < 0.2  # vertical became horizontal


def test_strong_moves_more_than_mild_for_every_kind_and_noise_has_its_level():
    x = _images(8)
    for kind in KINDS:
        mild, strong = (np.abs(shift_images(x, kind, s, seed=0).astype(np.float32) - x).mean() for s in ("mild", "strong"))
        assert strong > mild > 0, kind
    noisy = shift_images(np.full((4, 48, 48), 128, np.uint8), "noise", 0.05, seed=0).astype(np.float32)
    assert noisy.std() / 255 == pytest.approx(0.05, rel=0.1)


def test_random_params_cover_every_kind_within_the_strong_setting():
    p = random_params(2000, torch.Generator().manual_seed(0))
    assert p.angle.abs().max() <= STRENGTHS["rotation"]["strong"] and p.angle.abs().max() > 0.9 * STRENGTHS["rotation"]["strong"]
    assert (p.gamma > 1).any() and (p.gamma < 1).any() and p.gamma.max() <= STRENGTHS["exposure"]["strong"] + 1e-6
    assert p.sharpness.min() >= -1 and (p.noise >= 0).all() and (p.zoom > 1).any() and (p.zoom < 1).any()
    half = random_params(2000, torch.Generator().manual_seed(0), scale=0.5)
    assert half.angle.abs().max() <= 0.5 * STRENGTHS["rotation"]["strong"] + 1e-6


def test_parse_shifts_and_its_errors():
    assert len(parse_shifts("standard")) == 2 * len(KINDS)
    assert parse_shifts("none") == [] and parse_shifts("") == [] and parse_shifts(None) == []
    assert parse_shifts("exposure:strong,zoom") == [("exposure", "strong"), ("zoom", "mild"), ("zoom", "strong")]
    assert parse_shifts("noise:0.1") == [("noise", "0.1")]
    with pytest.raises(CxrganError, match="unknown shift 'gloss'"):
        parse_shifts("gloss")
    with pytest.raises(CxrganError, match="strength must be"):
        parse_shifts("zoom:huge")


def test_summary_of_a_figure_over_the_conditions():
    s = summarize_conditions({IN_DISTRIBUTION: 0.9, "zoom:mild": 0.85, "zoom:strong": 0.75, "external x": 0.1})
    assert s["acquisition_mean"] == pytest.approx(0.8) and s["acquisition_worst"] == 0.75
    assert s["acquisition_worst_shift"] == "zoom:strong" and s["acquisition_worst_drop"] == pytest.approx(0.15)


def test_conditions_and_external_test_sets(phantom32, tmp_path):
    ds = PreparedDataset.open(phantom32)
    ext = write_subset(ds, ds.indices("val"), tmp_path / "ext", {"kind": "external"})
    conds = protocol_conditions(ds, "exposure:strong", [ext.root])
    assert [c.name for c in conds] == [IN_DISTRIBUTION, "exposure:strong", "external ext"]
    assert np.array_equal(conds[0].labels, conds[1].labels) and not np.array_equal(conds[0].images, conds[1].images)
    assert len(conds[2].labels) == len(ds.indices("val")) and "test split" not in conds[2].note  # it has no test split
    # another size is resized; a class the models do not know is refused
    other = PreparedDataset.open(phantom32)
    assert external_test(ext.root, other).images.shape[1:] == (32, 32)
    renamed = tmp_path / "renamed"
    import shutil

    shutil.copytree(ext.root, renamed)
    m = json.loads((renamed / "manifest.json").read_text())
    m["class_names"] = ["NORMAL", "PNEUMONIA", "FRACTURE"]
    (renamed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CxrganError, match="FRACTURE"):
        protocol_conditions(ds, "none", [renamed])


def test_held_out_cluster_split(phantom32, tmp_path, capsys):
    out = tmp_path / "held"
    s = cluster_split(phantom32, out, clusters=3, min_test_per_class=3, site_out=tmp_path / "site")
    ds, new = PreparedDataset.open(phantom32), PreparedDataset.open(out)
    from cxrgan.evaluate.shift import acquisition_clusters

    cl = acquisition_clusters(ds, 3, 0)
    held = s["held_out"]
    # the held-out cluster's images are the test split, and none of them trains
    counts = s["counts"][held]
    assert len(new.indices("test")) == sum(counts["test"].values())
    assert len(new.indices("train")) == len(ds.indices("train")) - sum(counts["train"].values())
    assert len(new.indices("val")) == len(ds.indices("val")) - sum(counts["val"].values())
    assert all(v >= 3 for v in counts["test"].values())
    new_test = {np.asarray(new.images[i]).tobytes() for i in new.indices("test")}
    held_test = {np.asarray(ds.images[i]).tobytes() for i in np.flatnonzero((cl.assignment == held) & (np.asarray(ds.splits) == 2))}
    assert new_test == held_test
    trained = {np.asarray(new.images[i]).tobytes() for i in np.concatenate([new.indices("train"), new.indices("val")])}
    assert not trained & {np.asarray(ds.images[i]).tobytes() for i in np.flatnonzero(cl.assignment == held)}
    assert leaky_groups(new.items()) == 0
    assert (out / "clusters.png").is_file() and json.loads((out / "cluster_split.json").read_text())["held_out"] == held
    # The dropped images (the held-out cluster's training and validation images) are the site dataset.
    site = PreparedDataset.open(tmp_path / "site")
    dropped = {np.asarray(ds.images[i]).tobytes() for i in np.flatnonzero((cl.assignment == held) & (np.asarray(ds.splits) != 2))}
    assert {np.asarray(site.images[i]).tobytes() for i in range(len(site))} == dropped and s["site_images"] == len(site)
    # every class is in every cluster: each class's mean was removed before clustering
    assert all(sum(per[split][c] for split in per) > 0 for per in s["counts"].values() for c in ds.class_names)
    assert main(["cluster-split", "--data", str(phantom32), "--out", str(tmp_path / "bad"), "--hold-out", "9"]) == 2
    assert "--hold-out must be a cluster index from 0 to 3" in capsys.readouterr().err


def test_acquisition_features_read_what_they_name():
    x = _images(6)
    f = acquisition_features(x)
    from cxrgan.data.acquisition import FEATURE_NAMES

    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    brighter = acquisition_features(shift_images(x, "exposure", 0.5))  # gamma 0.5 or 2: both ways
    assert not np.allclose(brighter[:, col["mean"]], f[:, col["mean"]])
    blurred = acquisition_features(np.stack([np.asarray(im) for im in shift_images(x, "sharpness", 1.0, seed=0)]))
    g = torch.Generator().manual_seed(0)
    blurred_rows = one_kind(6, "sharpness", 1.0, g).sharpness.numpy() < 0
    assert (blurred[blurred_rows, col["sharpness"]] < f[blurred_rows, col["sharpness"]]).all()


def test_studies_report_every_condition(phantom32, tmp_path):
    ds = PreparedDataset.open(phantom32)
    synth = write_subset(ds, ds.indices("train")[:150], tmp_path / "synth", {"kind": "synthetic"}).root
    ext = write_subset(ds, ds.indices("val"), tmp_path / "ext", {"kind": "external"}).root
    cfg = ClassifierConfig(width=8, epochs=5, batch_size=32, device="cpu")  # well above chance on the test split
    res = tstr(synth, phantom32, tmp_path / "tstr", cfg, seeds=(0, 1), progress=False,
               shifts="exposure:strong,noise:0.6", test_data=[ext])
    table = (tmp_path / "tstr" / "shift.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in table[1:]] == [IN_DISTRIBUTION, "exposure:strong", "noise:0.6", "external ext"]
    trtr = res["rows"][0]
    # the classifiers were really tested on the shifted images: noise at 0.6 of the range leaves them near chance
    assert trtr["roc_auc_mean"] > 0.7 and trtr["conditions"]["noise:0.6"]["roc_auc_mean"] < trtr["roc_auc_mean"] - 0.1
    s = json.loads((tmp_path / "tstr" / "tstr.json").read_text())["shift"]
    assert {"roc_auc_ratio_mean", "balanced_accuracy_ratio_worst", "roc_auc_seed_spread_ratio"} <= set(s["summary"])
    assert [c["name"] for c in s["conditions"]][-1] == "external ext"
    assert (tmp_path / "tstr" / "shift_roc_auc.png").is_file()
    aug = augment_study(phantom32, [synth], tmp_path / "aug", ratios=(1.0,), cfg=TINY, seeds=(0,), progress=False,
                        shifts="contrast:strong")
    assert aug["shift_gs_best"] == "GS@1" and "shift_gs_minus_ir_balanced_accuracy" in aug
    plain = tstr(synth, phantom32, tmp_path / "plain", TINY, seeds=(0,), progress=False, shifts="none")
    assert "shift" not in plain and not (tmp_path / "plain" / "shift.csv").exists()
    # the fixed-schedule protocol from the command line: the last epoch is kept
    assert main(["--quiet", "tstr", "--synthetic", str(synth), "--real", str(phantom32), "--out", str(tmp_path / "last"),
                 "--seeds", "0", "--epochs", "1", "--epoch-choice", "last", "--shifts", "zoom:strong"]) == 0
    saved = json.loads((tmp_path / "last" / "tstr.json").read_text())
    assert saved["classifier"]["select_epoch"] is False and saved["shift"]["conditions"][1]["name"] == "zoom:strong"


def test_acquisition_augment_of_training_batches():
    from cxrgan.train.augment import AcquisitionAugment

    x = torch.from_numpy(_images(8, 32).astype(np.float32) / 127.5 - 1)[:, None].contiguous(memory_format=torch.channels_last)
    assert AcquisitionAugment(0.0)(x) is x and not AcquisitionAugment(0.0)
    torch.manual_seed(5)
    a = AcquisitionAugment(1.0)(x)
    torch.manual_seed(5)
    b = AcquisitionAugment(1.0)(x)
    assert torch.equal(a, b) and a.is_contiguous(memory_format=torch.channels_last)  # torch's global RNG: resumable
    assert (a - x).abs().mean((1, 2, 3)).min() > 0.005 and a.min() >= -1 and a.max() <= 1  # every image moved
    with pytest.raises(ValueError, match="augment.acquisition"):
        AcquisitionAugment(-1.0)
