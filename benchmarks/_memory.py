"""Peak memory of a process tree, sampled from /proc (Linux; no extra packages).

Each process counts its proportional set size (``Pss`` in ``/proc/PID/smaps_rollup``): a page shared by several
processes counts once, divided among them. Summing plain RSS over a tree counts the pages that forked workers share
with their parent (copy-on-write) once per process: at a million images, ``prepare``'s parent and two decode workers
share its file records (about 200 MiB), and summed RSS counted them three times. RSS is the fallback where the kernel
has no ``smaps_rollup``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _proc_kib(path: str, key: str) -> int | None:
    """The ``key:`` line of a /proc file in KiB; None when the file or the line is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_kib(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB (resident set size where the kernel lacks smaps_rollup)."""
    pss = _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")
    return pss if pss is not None else (_proc_kib(f"/proc/{pid}/status", "VmRSS:") or 0)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(t) for t in text)
    except OSError:
        pass
    return out


def tree_mib(pid: int | None = None) -> float:
    """Current memory (PSS, see the module docstring) of ``pid`` and all its descendants, MiB."""
    pid = pid or os.getpid()
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _process_kib(p)
        stack.extend(_children(p))
    return total / 1024.0


class PeakMemory:
    """Context manager sampling the process tree's memory every ``interval`` s; ``.peak_mib`` afterwards."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak_mib, self._stop = interval, 0.0, threading.Event()

    def __enter__(self) -> "PeakMemory":
        self.base_mib = tree_mib()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, tree_mib())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_mib = max(self.peak_mib, tree_mib())

    @property
    def extra_mib(self) -> float:
        """Peak above the resident memory at entry."""
        return max(0.0, self.peak_mib - self.base_mib)
