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
