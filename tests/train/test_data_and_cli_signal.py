"""The loop's memory-mapped path for datasets beyond the in-memory limit, and Ctrl-C through the real CLI."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from cxrgan.data import PreparedDataset
from cxrgan.train import checkpoint as ckpt
from cxrgan.train import data as train_data


def test_memory_mapped_batches_equal_in_memory_batches(phantom32, monkeypatch):
    ds = PreparedDataset.open(phantom32)
    in_memory = train_data.TrainData(ds, "train", ["COVID", "NORMAL"])
    monkeypatch.setattr(train_data, "IN_MEMORY_LIMIT", 0)
    mapped = train_data.TrainData(ds, "train", ["COVID", "NORMAL"])
    assert in_memory.images is not None and mapped.images is None
    rows = np.array([5, 0, 17, 3, 3, 40])
    a = in_memory.batch(rows, torch.device("cpu"), channels_last=False)
    b = mapped.batch(rows, torch.device("cpu"), channels_last=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (6, 1, 32, 32) and a.x.min() >= -1 and a.x.max() <= 1
    assert set(a.y.tolist()) <= {ds.class_index("COVID"), ds.class_index("NORMAL")}


def test_epoch_sampler_covers_each_image_once_per_epoch_and_restores():
    s = train_data.EpochSampler(10, 3, seed=1)
    first = np.concatenate([s.next() for _ in range(3)])
    assert sorted(first.tolist()) == sorted(set(first.tolist())) and len(first) == 9
    state = s.state_dict()
    nxt = s.next()
    t = train_data.EpochSampler(10, 3, seed=1)
    t.load_state_dict(state)
    assert np.array_equal(t.next(), nxt)


def test_ctrl_c_in_cli_checkpoints_and_exits_130(phantom32, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cxrgan", "train", "--model", "dcgan", "--data", str(phantom32), "--out", str(run),
           "--steps", "100000", "--batch-size", "8", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
           "--set", "ckpt_every=100000", "--set", "log_every=1", "--set", "eval_samples=32", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = run / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "cxrgan train --resume" in out
    assert "Traceback" not in err
    steps = ckpt.list_checkpoints(run)
    assert len(steps) == 1 and steps[0] >= 3
