"""Helpers the benchmark scripts share: run a ``cxrgan`` command, prepare a source once."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str]) -> None:
    """``cxrgan --quiet ARGS`` in a process of its own; a failure stops the benchmark."""
    subprocess.run([sys.executable, "-m", "cxrgan", "--quiet", *args], check=True)


def train_command(run: Path, *args: str) -> list[str]:
    """The ``cxrgan --quiet train`` command line of the run at ``run``: ``--resume`` when it exists (a finished run then
    stops at once), else ``--out run`` with ``args``."""
    cmd = [sys.executable, "-m", "cxrgan", "--quiet", "train", "--out", str(run)]
    return cmd + (["--resume"] if (run / "config.yaml").is_file() else list(args))


def add_data_arguments(ap: argparse.ArgumentParser, data: Path, results: Path) -> None:
    """``--data`` (a source to prepare, default ``data``, or a prepared dataset), ``--size`` it is prepared at,
    ``--work`` and ``--results`` (default ``results``): the arguments of a study on one real dataset."""
    ap.add_argument("--data", default=str(data), help="source to prepare (npz) or a prepared dataset")
    ap.add_argument("--size", type=int, default=64, help="image size the source is prepared at (px)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", default=str(results))


def prepared(src: Path, dest: Path, size: int = 64) -> Path:
    """``src`` when it is a prepared dataset, else ``src`` prepared into ``dest`` at ``size`` px (once)."""
    if (src / "manifest.json").is_file():
        return src
    if not (dest / "manifest.json").is_file():
        run_cli(["prepare", str(src), "--out", str(dest), "--size", str(size)])
    return dest
