"""The self-describing run directory::

    RUN/config.yaml       the exact TrainConfig (reload it to reproduce the run)
    RUN/run.json          code version, data path, data manifest hash, classes, image size, family
    RUN/metrics.csv       one row per logging step
    RUN/checkpoints/      step-XXXXXXXX/ {weights.safetensors, state.pt, meta.json}, last.json, best.json
    RUN/samples/          fixed-latent sample grids (step-XXXXXXXX.png)
    RUN/plots/            losses.png, d_accuracy.png, quality.png
    RUN/events/           TensorBoard event files (when tensorboard is installed)

``sample``, ``compare`` and ``report`` need nothing but this directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..version import __version__
from ..errors import CxrganError
from .config import TrainConfig, config_from_dict


def code_version() -> dict[str, str]:
    info = {"cxrgan": __version__, "torch": torch.__version__}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            info["git"] = sha.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                                   capture_output=True, text=True, timeout=5)
            info["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def step_budget(cfg: TrainConfig, train_images: int) -> int:
    """The steps a run trains for: ``epochs`` passes over its ``train_images`` (whole batches only) when
    ``cfg.epochs`` is set, else ``cfg.steps``."""
    if cfg.epochs > 0:
        return cfg.epochs * max(1, train_images // max(1, min(cfg.batch_size, train_images)))
    return cfg.steps


def read_run(run: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """``(config, run_info)`` of a run directory; :class:`CxrganError` when it is not one."""
    import yaml

    run = Path(run)
    cfg_path, info_path = run / "config.yaml", run / "run.json"
    if not cfg_path.is_file() or not info_path.is_file():
        raise CxrganError(f"{run} is not a cxrgan run directory (no config.yaml/run.json); train one with `cxrgan train --out {run}`")
    try:
        cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()) or {})
        info = json.loads(info_path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise CxrganError(f"{run}: config.yaml or run.json is unreadable ({exc})") from None
    return cfg, info


RUN_ENTRIES = {"config.yaml", "run.json", "metrics.csv", "samples", "plots", "checkpoints", "events"}


def unstarted(run: str | Path) -> bool:
    """True for a run directory that holds only what ``train`` writes before its first checkpoint (a run killed
    that early): nothing but cxrgan's own files and no checkpoint. Such a run can be started over in place."""
    run = Path(run)
    if not run.is_dir():
        return False
    names = {p.name for p in run.iterdir() if not p.name.startswith(".")}
    ckpts = run / "checkpoints"
    has_ckpt = ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())
    return names <= RUN_ENTRIES and not has_ckpt
