"""Conversions between stored images and model tensors."""

from __future__ import annotations

import numpy as np
import torch


def to_model_range(u8: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` uint8 -> ``(B, 1, S, S)`` float32 in [-1, 1]."""
    return u8.unsqueeze(1).float().div_(127.5).sub_(1.0)


def batches(images: np.ndarray, batch: int, device: torch.device | str = "cpu"):
    """Yield ``(B, 1, S, S)`` float tensors in [-1, 1] from uint8 ``(N, S, S)`` images (memory-mapped is fine)."""
    for i in range(0, len(images), batch):
        yield to_model_range(torch.from_numpy(np.array(images[i : i + batch])).to(device))
