"""A training step never reads a tensor's value back on the host (which, on a GPU, waits for every queued kernel):
losses, figures and the NaN check stay on the device until a logging step. Checked on the CPU, for every family,
with the counters that would show the same reads on a GPU."""

from __future__ import annotations

import pytest
import torch

from cxrgan.bench import FAMILIES, profile_steps
from cxrgan.runtime.syncs import HostReads, OpCount

TINY = ["model.g_channels=8", "model.d_channels=8", "model.hidden=32", "model.z_dim=16"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_plain_training_step_reads_nothing_back(family, phantom32, tmp_path):
    p = profile_steps(family, phantom32, tmp_path, batch=8, steps=10, device="cpu", overrides=TINY)
    assert p.reads_per_step == 0, f"{family}: host reads in a plain step: {p.read_sites}"
    assert p.reads_per_log_step >= 1  # the logging step reads the window's figures: the counter sees reads
    assert p.ops_per_step > 50


def test_a_read_in_the_step_is_found_with_its_place(phantom32, tmp_path, monkeypatch):
    from cxrgan.models.base import Family

    real = Family.phase_loss

    def chatty(self, phase, batch, augment):
        loss, stats = real(self, phase, batch, augment)
        if loss.item() > 1e9:  # the kind of line that would make a GPU wait every step
            pass
        return loss, stats

    monkeypatch.setattr(Family, "phase_loss", chatty)
    p = profile_steps("dcgan", phantom32, tmp_path, batch=8, steps=10, device="cpu", overrides=TINY)
    assert p.reads_per_step == 2  # one per phase (D, G)
    assert any(site.startswith("item at ") and "test_host_reads.py" in site for site in p.read_sites)


def test_counters_see_reads_ops_and_views():
    x = torch.randn(4, 3)
    with HostReads() as reads, OpCount() as ops:
        y = (x @ x.t()).relu()
        y.view(-1).sum().item()
        bool(y.sum() > 0)
        y.tolist()
    assert [name for name, _ in reads.reads] == ["item", "__bool__", "tolist"]
    assert ops.ops["mm"] == 1 and ops.ops["relu"] == 1 and ops.views["view"] == 1 and ops.views["t"] == 1
    assert ops.total == sum(ops.ops.values())


def test_a_nan_is_caught_within_the_bound_of_unchecked_losses(phantom32, tmp_path, monkeypatch):
    """With logging and checkpoints far apart, the losses kept on the device are still checked every
    MAX_UNCHECKED phases, so a NaN stops the run soon after, naming its step."""
    import cxrgan.train.loop as loop
    from cxrgan.errors import CxrganError
    from cxrgan.models.base import Family

    from .helpers import tiny_config

    real = Family.phase_loss
    calls = {"n": 0}

    def poisoned(self, phase, batch, augment):
        loss, stats = real(self, phase, batch, augment)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] == 5 else (loss, stats)  # step 3, D

    monkeypatch.setattr(Family, "phase_loss", poisoned)
    monkeypatch.setattr(loop, "MAX_UNCHECKED", 4)
    steps = []
    cfg = tiny_config(phantom32, "dcgan", "steps=40", "log_every=1000", "ckpt_every=1000", "grid_every=1000")
    with pytest.raises(CxrganError, match=r"D loss became nan at step 3"):
        loop.train(cfg, tmp_path / "r", progress=False, on_step=lambda step, stats: steps.append(step))
    assert steps == [1, 2, 3]  # checked at the end of step 4 (8 losses kept), before its on_step
