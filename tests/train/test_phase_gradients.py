"""Each phase computes gradients only for the parameters it optimizes, and that changes no trained weight."""

from __future__ import annotations

import contextlib

import pytest
import torch

import cxrgan.train.loop as loop
from cxrgan.train import checkpoint as ckpt

from .helpers import tiny_config


def _final_tensors(run):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / ckpt.ckpt_name(ckpt.list_checkpoints(run)[-1]) / "weights.safetensors"))


@pytest.mark.parametrize("family", ["dcgan", "bigan"])
def test_skipping_other_phases_gradients_leaves_the_weights_unchanged(phantom32, tmp_path, monkeypatch, family):
    cfg = tiny_config(phantom32, family, "steps=4", "ckpt_every=4", "precision=fp32")
    loop.train(cfg, tmp_path / "only", progress=False)
    monkeypatch.setattr(loop, "_gradients_only_for", lambda params, fam: contextlib.nullcontext())
    loop.train(cfg, tmp_path / "all", progress=False)
    a, b = _final_tensors(tmp_path / "only"), _final_tensors(tmp_path / "all")
    assert a.keys() == b.keys() and any(k.startswith("D.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_g_phase_computes_no_discriminator_gradient(phantom32, tmp_path, monkeypatch):
    seen: list[tuple[str, bool, bool]] = []
    built = {}
    orig_build = loop.build_family

    def build(*a, **k):
        fam = built["family"] = orig_build(*a, **k)
        orig_phase = fam.phase_loss

        def phase_loss(phase, batch, augment):
            seen.append((phase, any(p.requires_grad for p in fam.D.parameters()),
                         all(p.requires_grad for p in fam.G.parameters()) and any(p.requires_grad for p in fam.G.parameters())))
            return orig_phase(phase, batch, augment)

        fam.phase_loss = phase_loss
        return fam

    monkeypatch.setattr(loop, "build_family", build)
    loop.train(tiny_config(phantom32, "dcgan", "steps=2", "ckpt_every=2"), tmp_path / "r", progress=False)
    assert seen == [("D", True, False), ("G", False, True)] * 2
    assert all(p.requires_grad for p in built["family"].parameters())  # given back after each phase
