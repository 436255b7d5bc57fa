"""sample and compare, and the CLI round trip prepare -> train -> sample -> compare."""

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.errors import CxrganError
from cxrgan.sample import sample, truncated_normal
from cxrgan.train.loop import train

from .helpers import tiny_config



@pytest.fixture(scope="module")
def runs(phantom32, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(tiny_config(phantom32, "cgan"), root / "cgan", progress=False)
    train(tiny_config(phantom32, "dcgan", "data.classes=[PNEUMONIA]"), root / "pneu", progress=False)
    train(tiny_config(phantom32, "dcgan", "data.classes=[NORMAL]"), root / "norm", progress=False)
    return root


def test_sample_is_deterministic_and_a_dataset(runs, tmp_path):
    a = sample([runs / "cgan"], tmp_path / "a", n=12, seed=3)
    b = sample([runs / "cgan"], tmp_path / "b", n=12, seed=3, png=False)
    c = sample([runs / "cgan"], tmp_path / "c", n=12, seed=4)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert not np.array_equal(np.asarray(a.images), np.asarray(c.images))
    assert a.class_names == ["COVID", "NORMAL", "PNEUMONIA"] and np.bincount(a.labels).tolist() == [4, 4, 4]
    assert len(list((tmp_path / "a" / "png").rglob("*.png"))) == 12
    src = a.manifest["source"]
    assert src["kind"] == "synthetic" and src["runs"][0]["checkpoint"].startswith("step-") and src["seed"] == 3


def test_conditional_sampling_gives_requested_class(runs, tmp_path):
    ds = sample([runs / "cgan"], tmp_path / "p", n=10, classes=["pneumonia"])
    assert ds.class_names == ["PNEUMONIA"] and (ds.labels == 0).all() and len(ds) == 10
    assert sorted(p.parent.name for p in (tmp_path / "p" / "png").rglob("*.png")) == ["PNEUMONIA"] * 10
    with pytest.raises(CxrganError, match="cannot generate class 'CANCER'"):
        sample([runs / "cgan"], tmp_path / "q", n=4, classes=["CANCER"])


def test_per_class_runs_combine_into_one_labelled_set(runs, tmp_path):
    ds = sample([runs / "pneu", runs / "norm"], tmp_path / "mix", n=6)
    assert ds.class_names == ["NORMAL", "PNEUMONIA"] and np.bincount(ds.labels).tolist() == [6, 6]
    only = sample([runs / "pneu", runs / "norm"], tmp_path / "only", n=5, classes=["NORMAL"])
    assert only.class_names == ["NORMAL"] and len(only) == 5


def test_truncation_bounds_latents():
    import torch

    z = truncated_normal(500, 8, 0.5, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5 and z.std() > 0.2


def test_temperature_scales_the_noise_and_is_recorded(runs, tmp_path):
    import torch

    z1 = truncated_normal(400, 8, None, torch.Generator().manual_seed(0))
    z2 = truncated_normal(400, 8, None, torch.Generator().manual_seed(0), temperature=1.5)
    assert torch.allclose(z2, 1.5 * z1)
    zt = truncated_normal(400, 8, 0.5, torch.Generator().manual_seed(0), temperature=2.0)
    assert zt.abs().max() <= 1.0 and zt.abs().max() > 0.5
    with pytest.raises(CxrganError, match="temperature must be positive"):
        truncated_normal(4, 8, None, torch.Generator(), temperature=0)
    cold = sample([runs / "cgan"], tmp_path / "cold", n=12, seed=3, png=False, temperature=0.01)
    hot = sample([runs / "cgan"], tmp_path / "hot", n=12, seed=3, png=False, temperature=2.0)
    base = sample([runs / "cgan"], tmp_path / "base", n=12, seed=3, png=False)
    assert hot.manifest["source"]["temperature"] == 2.0 and base.manifest["source"]["temperature"] == 1.0
    spread = {k: float(np.asarray(d.images, np.float32)[d.labels == 0].std(axis=0).mean()) for k, d in
              (("cold", cold), ("base", base))}
    assert spread["cold"] < 0.5 * spread["base"]  # near-zero noise: one class's images nearly alike
    assert not np.array_equal(np.asarray(hot.images), np.asarray(base.images))


def test_compare_writes_figures_grid_and_table(runs, tmp_path):
    from cxrgan.report.compare import compare

    out = compare([runs / "cgan", runs / "pneu"], tmp_path / "cmp")
    for f in ("losses.png", "d_accuracy.png", "quality.png", "samples.png", "summary.csv", "summary.md"):
        assert (out / f).is_file()
    table = (out / "summary.md").read_text()
    assert "cgan" in table and "pneu" in table and "best_fd" in table
    import csv

    from cxrgan.train import checkpoint as ckpt

    for row in csv.DictReader(open(out / "summary.csv")):  # the step each run chose, not a rule recomputed here
        chosen = ckpt.best_step(runs / row["run"])
        assert (int(row["best_step"]) if row["best_step"] else None) == chosen
    from PIL import Image

    # One row per class for the conditional run (3) plus one for the per-class run.
    assert Image.open(out / "samples.png").size[1] >= 4 * 32


def test_cli_round_trip(tmp_path, capsys):
    d, r = tmp_path / "data", tmp_path / "run"
    assert main(["prepare", "phantom", "--count", "80", "--size", "32", "--out", str(d), "--quiet"]) == 0
    assert main(["train", "--model", "dcgan", "--data", str(d), "--out", str(r), "--steps", "4", "--batch-size", "8",
                 "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--set", "ckpt_every=2",
                 "--set", "eval_samples=32", "--acquisition", "0.5", "--quiet"]) == 0
    assert "acquisition: 0.5" in (r / "config.yaml").read_text()
    assert main(["train", "--out", str(r), "--resume", "--steps", "6", "--quiet"]) == 0
    assert main(["sample", str(r), "--n", "9", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert main(["compare", str(r), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and "trained 6 steps" in out and "UNLABELLED" in out
    assert len(PreparedDataset.open(tmp_path / "s")) == 9
    assert main(["sample", str(tmp_path / "nope"), "--out", str(tmp_path / "t"), "--quiet"]) == 2
    assert "not a cxrgan run directory" in capsys.readouterr().err
