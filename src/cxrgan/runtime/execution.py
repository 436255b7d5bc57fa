"""Device, precision and RNG plumbing for the loop."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from ..errors import CxrganError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. Otherwise the named device, which must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CxrganError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CxrganError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CxrganError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return dev


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (Linux); empty where they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Does ``device`` compute bf16 in hardware? CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the AVX-512 BF16 or
    AMX-BF16 units, read from the CPU's own flags (not guessed from a model name or torch's build capability:
    an AVX-512 CPU without the BF16 extension emulates bf16 at a fraction of fp32 speed)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


CUDA_BF16_MIN_PIXELS = 1 << 20


def autocast_dtype(precision: str, device: torch.device, pixels: int | None = None) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto``, ``bf16``, ``fp32``) on ``device``; None means fp32.

    ``auto``: fp32 where bf16 would be emulated (about 0.05x on AVX2; see :func:`native_bf16`). On a CPU with
    AVX-512 BF16 or AMX, bf16 (1.5x here, and over five seeds of a DCGAN no quality loss against fp32: paired FD
    difference -0.46 +- 1.63, docs/results/bf16). On CUDA, bf16 only when a process's batch holds at least
    ``CUDA_BF16_MIN_PIXELS`` pixels (``pixels``; e.g. 256 images of 64 px): these networks are small, a small batch
    leaves the GPU waiting for kernel launches, and autocast's extra cast kernels then cost more than bf16 saves.
    Measured on an H100 (64 px DCGAN): batch 64, bf16 0.51x the fp32 eager reference against 0.85x for fp32 (fp32
    convolutions use TF32 there); batch 512, bf16 0.92-0.99x against 0.68-0.70x."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if not native_bf16(device):
        return None
    if device.type == "cuda" and pixels is not None and pixels < CUDA_BF16_MIN_PIXELS:
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def reproducible(device: torch.device) -> None:
    """Make the same steps give the same weights on ``device``: on CUDA, cuDNN picks deterministic algorithms and
    no autotuning (its fastest kernels for a convolution's backward, and for R1's double backward, add with
    atomics in an order that varies from run to run, which breaks exact resume). fp32 convolutions keep cuDNN's
    TF32 default."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG the loop uses, as tensors and plain data (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def isolated_rng():
    """Run a block without moving the global random streams (quality checks, sample grids): the training
    draws after it are those it would have made without the block, in one process or in several."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
