"""Resume reproduces the uninterrupted run exactly; signals checkpoint first; NaN stops; bad checkpoints."""

import os
import signal

import pytest
import torch

from cxrgan.errors import CxrganError
from cxrgan.train import checkpoint as ckpt
from cxrgan.train.loop import train
from cxrgan.train.metrics import read_metrics

from .helpers import tiny_config


def _weights(run):
    import json

    family = json.loads((run / "run.json").read_text())["family"]
    tensors, _, _ = ckpt.load_checkpoint(ckpt.resolve(run, "last"), family, with_state=False)
    return tensors


@pytest.mark.parametrize("family, extra", [
    ("dcgan", []),  # its defaults (configs/dcgan.yaml), D's class head and the projection on its verdict included
    ("dcgan", ["augment.policy=translation,cutout,color", "loss.r1_gamma=0.1", "ema_decay=0.999"]),
    ("dcgan", ["model.clusters=3", "loss.r1_gamma=0.1"]),  # self-conditioned on label-free clusters
    ("dcgan", ["model.g_class_share=1"]),  # G asked, through D's class head, for the data's class shares
    ("bigan", []),  # its defaults (configs/bigan.yaml), D's class head and the projection on its verdict included
    ("bigan", ["optim.lr_e=0.0001"]),  # the encoder in an Adam group of its own
    ("cgan", []),  # its measured defaults: hinge, spectral norm, projection, minibatch stddev, translation
    ("cgan", ["model.g_cond=cbn", "model.mbstd_by_class=true"]),  # the options measured in docs/results/long_runs/gpu_sweep
    ("semicond", ["model.code_correlation=0.3"]),
    ("dgm", []),  # inputs drawn from the bound training images with the loop's own generators
    ("dgm", ["augment.acquisition=1"]),  # random acquisition shifts of the inputs, from the global RNG
    ("ddpm", ["model.sample_steps=4", "model.timesteps=100"]),  # noise, timesteps and label dropout from the global RNG
    ("ddpm", ["model.sample_steps=4", "model.prediction=v_prediction", "model.guidance=2"]),
])
def test_resume_equals_uninterrupted(phantom32, tmp_path, family, extra):
    straight = tiny_config(phantom32, family, "steps=8", "ckpt_every=4", *extra)
    train(straight, tmp_path / "a", progress=False)
    first = tiny_config(phantom32, family, "steps=4", "ckpt_every=4", *extra)
    train(first, tmp_path / "b", progress=False)
    train(tiny_config(phantom32, family, "steps=8", "ckpt_every=4", *extra), tmp_path / "b", resume=True, progress=False)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    assert any(k.startswith("ema.") for k in wa) == (straight.ema_decay > 0)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    rows_a = [r["step"] for r in read_metrics(tmp_path / "a" / "metrics.csv")]
    rows_b = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.csv")]
    assert rows_a == rows_b


@pytest.mark.parametrize("lr_e", [0.0, 0.0001])
def test_encoder_rate_is_a_group_of_its_own(phantom32, tmp_path, lr_e):
    cfg = tiny_config(phantom32, "bigan", "steps=2", "ckpt_every=2", "optim.lr_g=0.0003", f"optim.lr_e={lr_e}")
    train(cfg, tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoints" / ckpt.ckpt_name(2) / "state.pt", weights_only=True)
    groups = state["optim"]["G"]["param_groups"]
    n_g = len(_param_keys(tmp_path / "r", "G"))
    if lr_e:  # G's parameters first at lr_g, then E's at lr_e
        assert [g["lr"] for g in groups] == [pytest.approx(0.0003), pytest.approx(0.0001)]
        assert len(groups[0]["params"]) == n_g
    else:  # one group, as checkpoints written before lr_e existed hold
        assert [g["lr"] for g in groups] == [pytest.approx(0.0003)]
        assert len(groups[0]["params"]) > n_g
    assert state["optim"]["D"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr_d)


def _param_keys(run, module):
    """The names of ``module``'s parameters (not its batch-norm buffers) in the run's last checkpoint."""
    return [k for k in _weights(run) if k.startswith(f"{module}.") and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]


def test_sigterm_writes_checkpoint_then_resume_finishes(phantom32, tmp_path):
    def kill_at_3(step, stats):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_config(phantom32, "dcgan", "steps=10", "ckpt_every=100")
    res = train(cfg, tmp_path / "r", progress=False, on_step=kill_at_3)
    assert res.interrupted and res.step == 3
    assert ckpt.list_checkpoints(tmp_path / "r") == [3]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    done = train(cfg, tmp_path / "r", resume=True, progress=False)
    assert done.step == 10 and not done.interrupted
    # The interrupted-and-resumed run equals the straight one.
    train(cfg, tmp_path / "s", progress=False)
    wa, wb = _weights(tmp_path / "r"), _weights(tmp_path / "s")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(phantom32, tmp_path, monkeypatch):
    from cxrgan.models.base import Family

    real = Family.phase_loss
    calls = {"n": 0}

    def poisoned(self, phase, batch, augment):
        loss, stats = real(self, phase, batch, augment)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] > 8 else (loss, stats)

    monkeypatch.setattr(Family, "phase_loss", poisoned)
    with pytest.raises(CxrganError, match=r"loss became nan at step 5.*last good checkpoint"):
        train(tiny_config(phantom32, "dcgan", "steps=10"), tmp_path / "n", progress=False)
    assert ckpt.list_checkpoints(tmp_path / "n") == [3]
    tensors, state, _ = ckpt.load_checkpoint(ckpt.resolve(tmp_path / "n", "last"), "dcgan")
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def test_corrupt_truncated_and_foreign_checkpoints(phantom32, tmp_path):
    run = tmp_path / "c"
    train(tiny_config(phantom32, "dcgan"), run, progress=False)
    path = ckpt.resolve(run, "last")
    with pytest.raises(CxrganError, match="is for model 'dcgan', not 'cgan'"):
        ckpt.load_checkpoint(path, "cgan")
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CxrganError, match="truncated or corrupt"):
        train(tiny_config(phantom32, "dcgan", "steps=9"), run, resume=True, progress=False)
    (path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CxrganError, match="truncated or corrupt"):
        ckpt.load_checkpoint(path, "dcgan")
    with pytest.raises(CxrganError, match="no checkpoint at step 77"):
        ckpt.resolve(run, 77)
    with pytest.raises(CxrganError, match="has no checkpoint"):
        ckpt.resolve(tmp_path, "last")


def test_resume_refuses_changed_data(phantom32, tmp_path):
    from cxrgan.data import Preprocess, SourceOptions, prepare

    other = prepare("phantom", tmp_path / "other", Preprocess(size=32), SourceOptions(count=60, seed=9), progress=False, workers=1)
    train(tiny_config(phantom32, "dcgan"), tmp_path / "r", progress=False)
    with pytest.raises(CxrganError, match="differs from the one run"):
        train(tiny_config(other.root, "dcgan", "steps=9"), tmp_path / "r", resume=True, progress=False)


def test_checkpoints_are_pruned_but_best_kept(phantom32, tmp_path):
    run = tmp_path / "p"
    # collapse_ratio=0: every checkpoint is eligible as best, so this tests pruning alone
    res = train(tiny_config(phantom32, "dcgan", "steps=12", "ckpt_every=2", "keep_checkpoints=2", "collapse_ratio=0"), run, progress=False)
    kept = ckpt.list_checkpoints(run)
    assert kept[-2:] == [10, 12] and res.best_step in kept and len(kept) <= 3
    assert not list((run / "checkpoints").glob(".*partial*"))
