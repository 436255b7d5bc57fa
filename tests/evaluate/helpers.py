"""Stand-ins for trained feature spaces in tests."""

from __future__ import annotations

import torch
from torch import nn


class BrightnessClassifier(nn.Module):
    """A stand-in for the trained classifier space: class 1 is "brighter than ``cut``"."""

    def __init__(self, cut: float) -> None:
        super().__init__()
        self.cut = nn.Parameter(torch.tensor(cut), requires_grad=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)) - self.cut
        return torch.stack([-m, m], dim=1)
