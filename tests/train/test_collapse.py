"""The loop's reaction to a constructed collapse: stop, or roll back to the last healthy checkpoint.

A 3-step generator is nearly constant too (BN in eval mode), so the threshold is set just above zero: only the
forced-constant generator (diversity exactly 0) falls below it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cxrgan.train.loop as loop
from cxrgan.cli import main
from cxrgan.train import checkpoint as ckpt
from cxrgan.train.metrics import read_metrics

from .helpers import tiny_config


def _last_layer(fam):
    return [m for m in fam.G.modules() if isinstance(m, nn.ConvTranspose2d)][-1]


@pytest.fixture
def captured(monkeypatch):
    """Capture the family the loop builds (so a test can break its generator mid-run)."""
    holder = {}
    orig = loop.build_family

    def build(*a, **k):
        holder["family"] = orig(*a, **k)
        return holder["family"]

    monkeypatch.setattr(loop, "build_family", build)
    return holder


def _collapse_at(holder, at_step, times=1000):
    """on_step hook (called after a step's checkpoint): from ``at_step`` on, for ``times`` calls, the generator's
    last layer is zeroed and frozen, so it is constant (tanh(0) for every latent) at the next checkpoint."""
    done = []

    def hook(step, stats):
        if step >= at_step and len(done) < times:
            layer = _last_layer(holder["family"])
            layer.weight.data.zero_()
            layer.weight.requires_grad_(False)  # no gradient: Adam leaves it at zero until a checkpoint is restored
            done.append(step)
    return hook


def test_on_collapse_stop(phantom32, tmp_path, captured):
    cfg = tiny_config(phantom32, "dcgan", "steps=12", "collapse_warmup=0", "collapse_ratio=1e-5", "ema_decay=0", "on_collapse=stop")
    res = loop.train(cfg, tmp_path / "r", progress=False, on_step=_collapse_at(captured, 4))
    assert res.stopped_on_collapse and res.step == 6 and res.collapse_step == 6
    assert ckpt.list_checkpoints(tmp_path / "r")[-1] == 6 and res.best_step == 3


def test_on_collapse_rollback_returns_to_healthy_checkpoint_with_lower_d_lr(phantom32, tmp_path, captured):
    cfg = tiny_config(phantom32, "dcgan", "steps=9", "collapse_warmup=0", "collapse_ratio=1e-5", "ema_decay=0",
                      "on_collapse=rollback", "max_rollbacks=1", "collapse_lr_factor=0.5")
    run = tmp_path / "r"
    res = loop.train(cfg, run, progress=False, on_step=_collapse_at(captured, 4, times=3))  # steps 4-6, once
    assert res.rollbacks == [(6, 3)] and res.step == 9 and not res.stopped_on_collapse
    state = torch.load(run / "checkpoints" / ckpt.ckpt_name(9) / "state.pt", weights_only=True)
    assert state["optim"]["D"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr_d * 0.5)
    assert state["optim"]["G"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr_g)
    assert state["rollbacks"] == 1
    steps = [int(r["step"]) for r in read_metrics(run / "metrics.csv")]
    assert steps == sorted(set(steps)) and steps[-1] == 9  # the abandoned trajectory's rows are gone


def test_rollback_without_a_healthy_checkpoint_stops(phantom32, tmp_path, captured, capsys):
    cfg = tiny_config(phantom32, "dcgan", "steps=9", "collapse_warmup=0", "collapse_ratio=1e-5", "ema_decay=0", "on_collapse=rollback")
    res = loop.train(cfg, tmp_path / "r", progress=False, on_step=_collapse_at(captured, 1))
    assert res.stopped_on_collapse and res.step == 3 and res.best_step is None


def test_bad_on_collapse_value_is_one_line_error(phantom32, tmp_path, capsys):
    assert main(["train", "--data", str(phantom32), "--out", str(tmp_path / "x"), "--set", "on_collapse=explode"]) == 2
    assert "on_collapse must be" in capsys.readouterr().err


def test_end_of_run_line_tells_a_recovered_dip_from_a_collapse(tmp_path):
    from cxrgan.cli import collapse_summary

    dipped = loop.RunResult(run=tmp_path, step=2800, collapse_step=500,
                            last_eval={"fd": 2.0, "diversity": 3.7, "diversity_real": 4.8, "diversity_ratio": 0.77})
    line = collapse_summary(dipped, 0.5)
    assert line.startswith("note:") and "step 500 and recovered (0.77" in line and "warning" not in line
    still = loop.RunResult(run=tmp_path, step=2800, collapse_step=500,
                           last_eval={"fd": 9.0, "diversity": 1.0, "diversity_real": 4.8, "diversity_ratio": 0.21})
    assert collapse_summary(still, 0.5).startswith("warning: possible mode collapse from step 500 (sample diversity 0.21")
    unknown = loop.RunResult(run=tmp_path, step=600, collapse_step=500)  # resumed and stopped before an evaluation
    assert collapse_summary(unknown, 0.5) == f"warning: possible mode collapse from step 500; look at {tmp_path}/samples"


def test_a_generator_repeating_a_few_images_is_flagged_though_its_mean_distance_passes(phantom32):
    """Few-mode collapse: 128 samples made of 4 real images keep most of the mean pairwise distance of real
    images (above the 0.5 threshold, so the distance alone would call them healthy), but their effective number
    of distinct samples is far below real's, so the checkpoint is not eligible as best; distinct real images are.
    The monitor's recall tells them apart as well; its precision does not (both are real images)."""
    import numpy as np

    from cxrgan.data import PreparedDataset
    from cxrgan.train.data import TrainData, to_model_range
    from cxrgan.train.quality import QualityMonitor, eligible, health

    from cxrgan.evaluate.extractors import FeatureSpace

    torch.manual_seed(0)  # a random projection of the pixels: distances and directions as in pixel space
    pixels = FeatureSpace(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 256, bias=False)), "pixels", "pixels-test")
    data = TrainData(PreparedDataset.open(phantom32))
    monitor = QualityMonitor(data, 256, 16, seed=0, device=torch.device("cpu"), space=pixels)
    rows = np.random.default_rng(5).choice(len(data), size=len(monitor.z), replace=False)
    images = to_model_range(torch.from_numpy(data.uint8(np.sort(rows))))
    varied = monitor.score(images)
    few = monitor.score(images[torch.arange(len(images)) % 4])
    assert varied["diversity_ratio"] > 0.8 and varied["vendi_ratio"] > 0.8 and eligible(varied, 0.5)
    assert few["diversity_ratio"] > 0.5, few  # the mean distance alone misses it
    assert few["vendi_ratio"] < 0.3 and not eligible(few, 0.5)
    # precision and recall: real images are inside real neighbourhoods either way, but only varied ones cover them
    assert varied["precision"] > 0.8 and varied["recall"] > 0.8, varied
    assert few["precision"] > 0.8 and few["recall"] < 0.05, few
    value, what = health(few)
    assert value == few["vendi_ratio"] and "distinct samples" in what
