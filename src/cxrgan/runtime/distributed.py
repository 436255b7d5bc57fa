"""Several processes, one run: ``torchrun --nproc_per_node=K -m cxrgan train ...``.

How K processes train exactly as one process with the same global batch:

- **Data**: every process runs the same :class:`~cxrgan.train.data.EpochSampler` (a pure function of seed and
  epoch) and takes its contiguous slice of each global batch (:func:`shard_rows`). The sampler state is global,
  so resume is exact and works with another number of processes.
- **Randomness**: every process seeds alike and draws each random tensor of a step (latents, augmentation
  offsets, gradient-penalty mixing) for the *global* batch, keeping its own rows (:func:`sharded`); the random
  streams therefore advance identically everywhere and match a single process.
- **Gradients**: after each phase's backward, the gradients of the phase's parameters are averaged over the
  processes with one flat all-reduce (:func:`average_gradients`); the optimizers then take identical steps.
  This is what ``DistributedDataParallel`` does, written out: a GAN step passes several batches through D
  (real, fake, and for R1 or WGAN-GP a double backward through ``torch.autograd.grad``), which DDP's one-forward,
  one-backward reducer does not support, so the families would otherwise need per-phase wrappers. StyleGAN2-ADA
  synchronizes its G and D the same way.
- **Batch norm** sees the global batch: its layers compute their mean and variance with a differentiable
  all-reduce while a training phase runs (:class:`SyncedBatchNorm`, in place of ``nn.SyncBatchNorm``, which
  is CUDA-only); running statistics are then identical in every process. EMA copies update from identical
  weights, so they are identical too; their batch-norm recalibration runs on one process with local batches.
- **Writing**: only rank 0 writes logs, grids, metrics, plots and checkpoints, and evaluates quality; it shares
  the outcome (best checkpoint, collapse) with the others, which wait at a barrier.
- **Failure**: a process that dies closes its connections; the collective calls of the others then fail, and
  they exit with one message (:func:`lost_peer`) instead of hanging. A process that hangs alive is caught by
  the process-group timeout (``CXRGAN_DIST_TIMEOUT`` seconds, default 600).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
import torch.nn as nn

from ..errors import CxrganError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_world = World()
_syncing = False


def world() -> World:
    return _world


def launched() -> bool:
    """True in a process that torchrun (or another launcher with its environment) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> World:
    """Join the process group that the launcher's environment describes (gloo on CPU, NCCL on CUDA)."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _world = World()
        return _world
    import torch.distributed as dist

    if not dist.is_available():
        raise CxrganError("this PyTorch build has no torch.distributed; train with one process")
    try:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise CxrganError("WORLD_SIZE is set but RANK is not; start several processes with torchrun") from None
    backend = backend_for(device)
    if device.type == "cuda" and device.index is None and backend == "nccl" and local >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise CxrganError(f"process {rank} (local rank {local}) has no GPU of its own: this machine has {n}; start at most "
                          f"{n} processes per machine (torchrun --nproc_per_node={n}), or set CXRGAN_DIST_BACKEND=gloo "
                          "to let processes share a GPU (slower)")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("CXRGAN_DIST_TIMEOUT", "600")))
        try:
            dist.init_process_group(backend, timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise CxrganError(f"process {rank} of {size} could not join the others ({_first_line(exc)}); check "
                              "MASTER_ADDR/MASTER_PORT (torchrun --rdzv-endpoint) and that every process started") from None
    _world = World(size, rank, local)
    return _world


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA, gloo for the CPU; ``CXRGAN_DIST_BACKEND`` (nccl, gloo) overrides, e.g. gloo where NCCL is
    missing or where several processes must share one GPU (NCCL refuses two ranks on one device)."""
    chosen = os.environ.get("CXRGAN_DIST_BACKEND", "").strip().lower()
    if not chosen:
        return "nccl" if device.type == "cuda" else "gloo"
    if chosen not in ("nccl", "gloo"):
        raise CxrganError(f"CXRGAN_DIST_BACKEND={chosen!r} is not a backend; use nccl or gloo, or unset it")
    if chosen == "nccl" and device.type != "cuda":
        raise CxrganError("CXRGAN_DIST_BACKEND=nccl needs CUDA devices; train with --device cuda or use gloo")
    return chosen


def teardown() -> None:
    """Leave the process group (at the end of a run, or after an error)."""
    global _world
    import torch.distributed as dist

    if _world.active and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _world = World()


def device_for(device: torch.device) -> torch.device:
    """One GPU per process on a multi-GPU machine: ``cuda:LOCAL_RANK``."""
    if _world.active and device.type == "cuda" and device.index is None:
        index = _world.local_rank % max(torch.cuda.device_count(), 1)  # shared only under gloo (see setup)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


# ------------------------------------------------------------------------------------------------ sharding


def local_batch(batch_size: int) -> int:
    """This process's share of the global batch; the global batch must divide evenly."""
    if batch_size % _world.size:
        raise CxrganError(f"batch size {batch_size} does not divide among {_world.size} processes; use a multiple of {_world.size}")
    return batch_size // _world.size


def shard_rows(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous slice of the rows of a global batch."""
    if not _world.active:
        return rows
    n = len(rows) // _world.size
    return rows[_world.rank * n : (_world.rank + 1) * n]


def sharded(n_local: int, draw: Callable[[int], T]) -> T:
    """A random draw for this process's ``n_local`` rows: ``draw(global rows)``, then this process's slice. All
    processes consume their random streams as one process with the global batch does."""
    if not _world.active:
        return draw(n_local)
    full = draw(n_local * _world.size)
    return full[_world.rank * n_local : (_world.rank + 1) * n_local]  # type: ignore[index]


# ------------------------------------------------------------------------------------------------ collectives


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def comm_error(exc: RuntimeError) -> bool:
    """Is ``exc`` a failed collective call (a peer died, hung, or the connection broke)?"""
    import torch.distributed as dist

    kinds = tuple(k for k in (getattr(dist, "DistError", None), getattr(dist, "DistBackendError", None),
                              getattr(dist, "DistNetworkError", None)) if k is not None)
    text = str(exc).lower()
    return isinstance(exc, kinds) or any(s in text for s in ("gloo", "nccl", "connection", "timed out", "peer", "socket"))


def lost_peer(exc: BaseException, run: Any) -> CxrganError:
    """The message for a collective call that failed because another process died or hung."""
    w = _world
    return CxrganError(f"process {w.rank} of {w.size} lost contact with the others ({_first_line(exc)}): one of them "
                       f"probably stopped with an error (see its output above) or was killed. The last checkpoint in "
                       f"{run}/checkpoints is intact; continue with `torchrun ... -m cxrgan train --out {run} --resume` "
                       "(with any number of processes)")


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the processes (one flat all-reduce)."""
    if not _world.active:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Per-process figures (losses, accuracies on local batches) averaged over the processes."""
    if not _world.active or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / _world.size for k, v in zip(keys, t.tolist())}


def any_process(flag: bool) -> bool:
    """True when ``flag`` is true in any process (a stop request that reached one process stops all)."""
    if not _world.active:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(bool(flag))])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` in every process (picklable data)."""
    if not _world.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _world.active:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------------------ batch norm


@contextlib.contextmanager
def syncing() -> Iterator[None]:
    """Within this block (a training phase), batch-norm layers normalize with statistics of the global batch."""
    global _syncing
    before, _syncing = _syncing, _world.active
    try:
        yield
    finally:
        _syncing = before


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) that gradients pass through: the backward of a sum over processes is the sum over
    processes of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _SumOverProcesses.apply(grad)


def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes, differentiably."""
    return _SumOverProcesses.apply(t) if _world.active else t


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-process tensor of ``local_batch`` rows, in the order :func:`shard_rows` cut it
    (rank 0's rows first), differentiably: each process's rows get the sum over processes of the gradients that
    reach them. A term computed from it is the same in every process, so after :func:`average_gradients` each
    process's networks get the gradient of that term on the global batch, as one process computes it."""
    if not _world.active:
        return t
    parts = [t if r == _world.rank else t.new_zeros(t.shape).detach() for r in range(_world.size)]
    return sum_over_processes(torch.cat(parts))


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch while :func:`syncing` is on.

    Converted in place from ``nn.BatchNorm1d``/``2d`` (:func:`sync_batchnorm`), so parameters, buffers and
    checkpoint keys are unchanged; outside a synced phase, or with one process, it is the plain layer."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected a 2D to 5D input (got {input.dim()}D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (_syncing and self.training):
            return super().forward(input)
        x = input.float()
        dims = [0] + list(range(2, x.dim()))
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        # Two passes, as one process computes them (no E[x^2] - E[x]^2 cancellation); the all-reduces are
        # differentiable, so each process's gradient includes its share through the global statistics.
        packed = sum_over_processes(torch.cat([x.sum(dims), count]))
        n = packed[-1]
        mean = packed[:c] / n
        var = sum_over_processes(((x - mean.view([1, c] + [1] * (x.dim() - 2))) ** 2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm1d``/``2d`` inside ``module`` into a :class:`SyncedBatchNorm`, in place."""
    for m in module.modules():
        if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            m.__class__ = SyncedBatchNorm
    return module


__all__ = ["World", "world", "launched", "setup", "backend_for", "teardown", "device_for", "local_batch", "shard_rows", "sharded",
           "average_gradients", "mean_over_processes", "any_process", "from_main", "barrier", "syncing",
           "SyncedBatchNorm", "sync_batchnorm", "sum_over_processes", "comm_error", "lost_peer"]
