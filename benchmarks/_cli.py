"""Helpers the benchmark scripts share: run a ``cxrgan`` command, prepare a source once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str]) -> None:
    """``cxrgan --quiet ARGS`` in a process of its own; a failure stops the benchmark."""
    subprocess.run([sys.executable, "-m", "cxrgan", "--quiet", *args], check=True)


def prepared(src: Path, dest: Path, size: int = 64) -> Path:
    """``src`` when it is a prepared dataset, else ``src`` prepared into ``dest`` at ``size`` px (once)."""
    if (src / "manifest.json").is_file():
        return src
    if not (dest / "manifest.json").is_file():
        run_cli(["prepare", str(src), "--out", str(dest), "--size", str(size)])
    return dest
