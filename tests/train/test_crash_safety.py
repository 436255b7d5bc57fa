"""Crashes and full disks lose nothing: ``kill -9`` at random moments of ``train`` (then ``--resume``), of
``prepare`` and of ``sample`` (then the same command again); a disk that fills while a checkpoint, a prepared
dataset or a synthetic set is written."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.train import checkpoint as ckpt
from cxrgan.train.metrics import COLUMNS, read_metrics


TRAIN_ARGS = ["--model", "dcgan", "--steps", "40", "--batch-size", "8", "--set", "model.g_channels=16", "--set",
              "model.d_channels=16", "--set", "model.z_dim=16", "--set", "ckpt_every=4", "--set", "log_every=2",
              "--set", "eval_samples=32", "--set", "grid_every=8"]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cxrgan", "--quiet", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds`` unless it ended first; True when it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _kill_past_step(proc: subprocess.Popen, run: Path, step: int, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``run`` has published a checkpoint at ``step`` or later, unless it
    ended first; True when it was killed. Tied to the run's progress, not to the clock, so the kills land inside
    the training however fast the machine is."""
    while proc.poll() is None:
        if any(s >= step for s in ckpt.list_checkpoints(run)):
            time.sleep(delay)
            return _kill_after(proc, 0.0)
        time.sleep(0.002)
    return False


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _, _ = ckpt.load_checkpoint(ckpt.resolve(run, "last"), "dcgan", with_state=False)
    return tensors


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if ".partial" in p.name or ".old-" in p.name]


def test_train_survives_kill_9_at_random_moments(phantom32, tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    kills, started = 0, False
    for attempt in range(8):
        proc = _cli("train", "--data", str(phantom32), "--out", str(run), *TRAIN_ARGS, *(["--resume"] if started else []))
        started = True
        # A kill at a random moment of the steps or the checkpoint writes one or two checkpoints further on.
        done = max(ckpt.list_checkpoints(run), default=0)
        if attempt < 4 and done < 32 and _kill_past_step(proc, run, done + 4 * int(rng.integers(1, 3)),
                                                         float(rng.uniform(0.0, 0.2))):
            kills += 1
            for step in ckpt.list_checkpoints(run):  # every published checkpoint is whole at any moment
                ckpt.load_checkpoint(run / "checkpoints" / ckpt.ckpt_name(step), "dcgan")
            continue
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-2000:]
        if "trained 40 steps" in out:
            break
    assert kills >= 2, "the training processes ended before they could be killed: lengthen the run"
    rows = read_metrics(run / "metrics.csv")
    steps = [int(float(r["step"])) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no torn, duplicated or out-of-order rows
    assert all(set(COLUMNS) <= set(r) and None not in r.values() for r in rows)
    assert not _leftovers(run)
    # What was killed and resumed equals a run that was never interrupted (resume is exact on the CPU).
    straight = tmp_path / "straight"
    proc = _cli("train", "--data", str(phantom32), "--out", str(straight), *TRAIN_ARGS)
    assert proc.wait(timeout=300) == 0
    wa, wb = _weights(run), _weights(straight)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_killed_before_its_first_checkpoint_starts_over_on_resume(phantom32, tmp_path):
    from cxrgan.train.loop import train
    from tests.train.helpers import tiny_config

    run = tmp_path / "run"
    cfg = tiny_config(phantom32, "dcgan", "steps=4", "ckpt_every=100")
    run.mkdir()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / f".step-00000004.partial-{2**22 + 12345}-abc").mkdir()  # a dead process's leftovers
    from cxrgan.train.config import save_config
    from cxrgan.utils.io import write_json_atomic

    save_config(cfg, run / "config.yaml")
    write_json_atomic(run / "run.json", {"family": "dcgan"})
    res = train(cfg, run, resume=True, progress=False)
    assert res.step == 4 and ckpt.list_checkpoints(run) == [4] and not _leftovers(run)


@pytest.mark.parametrize("verb", ["prepare", "sample"])
def test_prepare_and_sample_killed_leave_nothing_that_looks_complete(phantom32, tmp_path, verb):
    if verb == "prepare":
        args = ["prepare", "phantom", "--count", "500", "--size", "32", "--workers", "1"]
    else:
        from cxrgan.train.loop import train
        from tests.train.helpers import tiny_config

        train(tiny_config(phantom32, "cgan", "steps=2", "ckpt_every=2"), tmp_path / "run", progress=False)
        args = ["sample", str(tmp_path / "run"), "--n", "6000"]
    out = tmp_path / "out"
    proc = _cli(*args, "--out", str(out))
    # Kill once the work has started (its temporary directory exists), at a random moment after that.
    deadline = time.time() + 120
    while not _leftovers(tmp_path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert _kill_after(proc, float(np.random.default_rng(1).uniform(0.05, 0.4))), "finished before it could be killed"
    assert not out.exists()  # no half dataset under the final name
    assert _leftovers(tmp_path)
    proc = _cli(*args, "--out", str(out))
    assert proc.wait(timeout=600) == 0, proc.communicate()[0][-2000:]
    ds = PreparedDataset.open(out)
    assert len(ds) == (500 if verb == "prepare" else 6000)
    assert not _leftovers(tmp_path)  # the second run cleaned up after the first


def _disk_full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device", "weights.safetensors")


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(phantom32, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    run = tmp_path / "run"
    args = ["train", "--data", str(phantom32), "--out", str(run), "--model", "dcgan", "--steps", "8", "--batch-size", "8",
            "--set", "model.g_channels=16", "--set", "model.d_channels=16", "--set", "ckpt_every=4", "--set", "eval_samples=32"]
    real = safetensors.torch.save_file
    calls = {"n": 0}

    def fills_up(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            _disk_full()
        return real(*a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "--resume" in err and "Traceback" not in err
    assert ckpt.list_checkpoints(run) == [4] and not _leftovers(run)
    ckpt.load_checkpoint(ckpt.resolve(run, "last"), "dcgan")  # the previous one is intact
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(args + ["--resume"]) == 0 and ckpt.list_checkpoints(run)[-1] == 8


@pytest.mark.parametrize("verb", ["prepare", "sample"])
def test_disk_full_while_writing_a_dataset_leaves_the_old_one(phantom32, tmp_path, monkeypatch, capsys, verb):
    from cxrgan.data import dataset as dsmod

    out = tmp_path / "out"
    if verb == "prepare":
        args = ["prepare", "phantom", "--count", "40", "--size", "32", "--workers", "1", "--out", str(out)]
    else:
        from cxrgan.train.loop import train
        from tests.train.helpers import tiny_config

        train(tiny_config(phantom32, "cgan", "steps=2", "ckpt_every=2"), tmp_path / "run", progress=False)
        args = ["sample", str(tmp_path / "run"), "--n", "12", "--out", str(out)]
    assert main(args) == 0
    before = np.asarray(PreparedDataset.open(out).images).copy()
    real = dsmod.DatasetWriter.append
    calls = {"n": 0}

    def fills_up(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.dir / "images.npy"))
        return real(self, *a, **k)

    monkeypatch.setattr(dsmod.DatasetWriter, "append", fills_up)
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "images.npy" in err and "Traceback" not in err
    assert np.array_equal(np.asarray(PreparedDataset.open(out).images), before)  # the previous set is intact
    assert not _leftovers(tmp_path)
