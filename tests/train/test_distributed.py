"""torchrun: two CPU processes (gloo) train exactly as one process with the same global batch; a run resumes
with another number of processes; only rank 0 writes; a process that dies makes the other exit with one
message instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# CXRGAN_TEST_DEVICE=cuda runs these on a GPU (with CXRGAN_DIST_BACKEND=gloo where 2 processes share one GPU).
DEVICE = os.environ.get("CXRGAN_TEST_DEVICE", "cpu")
TINY = ["--device", DEVICE, "--batch-size", "16", "--precision", "fp32", "--set", "model.g_channels=16", "--set", "model.d_channels=16",
        "--set", "log_every=1", "--set", "eval_samples=64", "--set", "ckpt_every=2", "--quiet"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every process, and no oversubscription
    return env


def _train(args: list[str], procs: int, timeout: float = 240) -> subprocess.CompletedProcess:
    if procs == 1:
        cmd = [sys.executable, "-m", "cxrgan", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={procs}",
               "-m", "cxrgan", "train", *args]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "weights.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    """Equal to floating-point tolerance. Adam turns rounding differences in near-zero gradients (the global
    batch reduced as two halves) into steps of +-lr, and later steps amplify them, so the measure is the
    relative L2 distance of all weights: measured 1e-4 after 3 steps and 8e-4 after 6, while two processes
    without the gradient all-reduce, or without synchronized batch norm, are 8e-3 to 1.4e-2 away."""
    assert a.keys() == b.keys()
    keys = [k for k in a if a[k].dtype.is_floating_point]
    diff = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys) ** 0.5
    norm = sum(float((a[k].double() ** 2).sum()) for k in keys) ** 0.5
    assert diff / norm < tol, f"relative distance {diff / norm:.2e}"
    for k in a:
        if not a[k].dtype.is_floating_point:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("family, extra", [
    # Batch norm in G and D, BCE, and every DiffAugment draw. With translation and the default half-size cutout
    # alone, G's first batch-norm bias gets near-zero gradients whose rounding Adam turns into +-lr steps: on an
    # AVX-512 EPYC the two runs drifted 1e-5, 3e-4, 2e-3, 5e-3 apart over steps 1-4 (each op alone: < 5e-6).
    ("dcgan", ["--augment", "translation,cutout,color", "--set", "augment.cutout=0.25"]),
    ("cgan", []),  # its defaults: spectral norm, projection D, minibatch std, hinge, translation
    # class-wise statistics of the global batch; random acquisition shifts of the training images
    ("cgan", ["--set", "model.mbstd_by_class=true", "--set", "augment.acquisition=1"]),
    ("dcgan", ["--set", "loss.mode_seeking=1"]),  # pairs across the processes' rows (cgan: within a class, default)
])
def test_two_processes_equal_one(phantom32, tmp_path, family, extra):
    args = ["--model", family, "--data", str(phantom32), "--steps", "4", *TINY, *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    _train([*args, "--out", str(one)], 1)
    res = _train([*args, "--out", str(two)], 2)
    losses = [[float(v) for r in (run / "metrics.csv").read_text().splitlines()[1:3] for v in r.split(",")[3:5]] for run in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # G and D losses of the first two steps
    for step, tol in ((2, 1e-3), (4, 3e-3)):  # through a checkpoint with its quality check on rank 0 only
        _assert_close(_weights(one, step), _weights(two, step), tol)
    info = json.loads((two / "run.json").read_text())
    assert info["world_size"] == 2 and json.loads((one / "run.json").read_text())["world_size"] == 1
    # Rank 0 alone wrote: one metrics row per step, and one summary line on the console.
    rows = (two / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2, 3, 4]
    assert res.stdout.count("trained 4 steps") == 1
    logged = {k: float(v) for k, v in zip((one / "metrics.csv").read_text().splitlines()[0].split(","), rows[-1].split(",")) if v}
    assert logged["kimg"] == pytest.approx(4 * 16 / 1000)  # images of the global batch


def test_two_processes_equal_one_for_the_diffusion_family(phantom32, tmp_path):
    # The noise, the timesteps and the label dropout are drawn for the global batch and split (runtime.distributed.sharded).
    args = ["--model", "ddpm", "--data", str(phantom32), "--steps", "4", *TINY, "--set", "model.sample_steps=3",
            "--set", "model.timesteps=100", "--set", "eval_samples=16"]
    one, two = tmp_path / "one", tmp_path / "two"
    _train([*args, "--out", str(one)], 1)
    _train([*args, "--out", str(two)], 2)
    for step, tol in ((2, 1e-3), (4, 3e-3)):
        _assert_close(_weights(one, step), _weights(two, step), tol)
    # and not by chance: another seed's run is far away
    other = tmp_path / "other"
    _train([*args, "--seed", "1", "--out", str(other)], 1)
    with pytest.raises(AssertionError):
        _assert_close(_weights(one, 4), _weights(other, 4), 3e-3)


def test_resume_with_another_number_of_processes(phantom32, tmp_path):
    args = ["--model", "dcgan", "--data", str(phantom32), *TINY]
    straight, mixed = tmp_path / "straight", tmp_path / "mixed"
    _train([*args, "--steps", "4", "--out", str(straight)], 1)
    _train([*args, "--steps", "2", "--out", str(mixed)], 2)
    _train(["--out", str(mixed), "--resume", "--steps", "4", "--quiet"], 1)
    _assert_close(_weights(straight, 4), _weights(mixed, 4), 3e-3)
    info = json.loads((mixed / "run.json").read_text())
    assert info["world_size"] == 1 and info["world_sizes"] == [[0, 2], [2, 1]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_process_stops_the_other_with_a_message(phantom32, tmp_path):
    run = tmp_path / "run"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "CXRGAN_DIST_TIMEOUT": "120"}
        cmd = [sys.executable, "-m", "cxrgan", "train", "--model", "dcgan", "--data", str(phantom32), "--out", str(run),
               "--steps", "100000", *TINY]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.json").is_file():  # both are training
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        out, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 2, err[-3000:]
    assert "process 0 of 2 lost contact with the others" in err and "--resume" in err
    assert "Traceback" not in err
    assert waited < 60


def test_backend_choice_and_its_override(monkeypatch):
    from cxrgan.errors import CxrganError
    from cxrgan.runtime.distributed import backend_for

    monkeypatch.delenv("CXRGAN_DIST_BACKEND", raising=False)
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda")) == "nccl"
    monkeypatch.setenv("CXRGAN_DIST_BACKEND", "GLOO")
    assert backend_for(torch.device("cuda")) == "gloo"  # processes sharing one GPU
    monkeypatch.setenv("CXRGAN_DIST_BACKEND", "nccl")
    with pytest.raises(CxrganError, match="needs CUDA"):
        backend_for(torch.device("cpu"))
    monkeypatch.setenv("CXRGAN_DIST_BACKEND", "mpi")
    with pytest.raises(CxrganError, match="use nccl or gloo"):
        backend_for(torch.device("cpu"))
