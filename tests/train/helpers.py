"""Small, fast training configurations for tests (32 px, narrow networks, few steps)."""

from __future__ import annotations

from pathlib import Path

from cxrgan.train.config import TrainConfig, load_config


def tiny_config(data: Path, family: str = "dcgan", *extra: str) -> TrainConfig:
    return load_config(None, [
        f"model.family={family}", f"data.path={data}", "steps=6", "batch_size=8", "model.g_channels=16",
        "model.d_channels=16", "model.hidden=32", "model.z_dim=16", "log_every=2", "ckpt_every=3", "eval_samples=32",
        "grid_every=3", *extra,
    ])
