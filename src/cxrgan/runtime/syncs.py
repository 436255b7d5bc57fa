"""What a training step asks of the device: operations dispatched and values read back on the host.

On a GPU every operator is a kernel launch, and reading a tensor's value on the host (``.item()``, ``float(t)``,
``bool(t)``, ``.tolist()``, ``.numpy()``, ``.cpu()``, formatting) makes the CPU wait until every kernel queued before
it has run, so the next launches cannot overlap the running ones. Small networks are bound by exactly these two
costs. :class:`HostReads` and :class:`OpCount` measure them on any device, the CPU included, so that the code paths
that would stall a GPU are found, counted and tested where no GPU is (``cxrgan.bench.profile_steps``).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: Tensor methods that return a value to Python (a host synchronisation when the tensor is on a GPU).
READS = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "__complex__", "tolist", "numpy", "__array__",
                   "__format__", "cpu"})


def _to_host(args: tuple, kwargs: dict | None) -> bool:
    """Whether a ``Tensor.to(...)`` call moves a tensor from a device to the CPU (a tensor already there stays)."""
    src = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if src is None or src.device.type == "cpu":
        return False
    for a in (*args[1:], *(kwargs or {}).values()):
        if isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu":
            return True
    return False


def _site() -> str:
    """``file:line`` of the code that asked: the innermost frame outside PyTorch and this module (a path inside
    the package is given from the package, another by its file name)."""
    stack = [f for f in traceback.extract_stack() if not f.filename.endswith("syncs.py") and "/torch/" not in f.filename]
    f = stack[-1]
    name = f.filename.split("/cxrgan/", 1)[-1] if "/cxrgan/" in f.filename else f.filename.rsplit("/", 1)[-1]
    return f"{name}:{f.lineno}"


class HostReads(TorchFunctionMode):
    """Counts host reads of tensor values while active (a context manager), with where each came from.

    ``reads``: one ``(method, "file:line")`` per read, in order. On the CPU nothing waits, but the same reads of a
    CUDA tensor each wait for the GPU; a training step that should not wait must show none. Reading a tensor that
    would stay on the CPU in a GPU run also counts: where that matters, look at :meth:`sites`."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in READS or (name == "to" and _to_host(args, kwargs)):
            self.reads.append((name, _site()))
        return func(*args, **(kwargs or {}))

    def sites(self) -> Counter:
        """How many reads each ``"method at file:line"`` made."""
        return Counter(f"{name} at {site}" for name, site in self.reads)


class OpCount(TorchDispatchMode):
    """Counts the operators dispatched to the backend while active (forward, backward and optimizer alike), by
    name: ``ops`` those that compute (on a GPU one kernel launch or more each), ``views`` those that only make a new
    view of existing memory (``view``, ``detach``, ``expand``, ``t``...: no launch)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.views: Counter = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        (self.views if func.is_view else self.ops)[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Operators that compute: about the kernel launches on a GPU."""
        return sum(self.ops.values())
