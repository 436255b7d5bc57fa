"""Networks that judge images rather than make them: radiograph classifiers and Salehinejad et al.'s convolutional
autoencoder. Images are ``(N, 1, S, S)`` float in [-1, 1], S a power of two from 32 to 256.

Every network here exposes ``features(x) -> (N, F)``, the representation that the evaluation suite uses as a
feature space (the classifier's penultimate layer, the autoencoder's flattened latent).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A small VGG-style classifier: four conv-BN-ReLU stages with max-pooling (widths w, 2w, 4w, 8w), one more
    convolution at the coarsest scale, global average pooling, dropout and a linear head. About 15 M
    multiply-adds per 64 px image at ``width=16``, so a study trains in seconds on a CPU. ``features`` is the
    pooled ``(N, 8*width)`` vector."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_prev = 1
        for c in [width, width * 2, width * 4, width * 8]:
            layers += _conv_bn(c_prev, c) + [nn.MaxPool2d(2)]
            c_prev = c
        layers += _conv_bn(c_prev, c_prev)
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c_prev, num_classes)
        self.feature_dim = c_prev

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def multiscale_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global means of every stage's output, fine to coarse, concatenated ``(N, 23*width)``. The
        penultimate layer alone saturates on images unlike the training data (noise, salt-and-pepper), where
        the early stages still respond in proportion; the evaluation feature space uses all of them."""
        out = []
        h = x
        for m in self.body:
            h = m(h)
            if isinstance(m, nn.MaxPool2d):
                out.append(h.mean(dim=(2, 3)))
        out.append(h.mean(dim=(2, 3)))
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, stride), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al.): [2, 2, 2, 2] basic blocks at widths w, 2w, 4w, 8w, written here (no downloaded
    weights). The stem is a stride-2 3x3 convolution (no max-pool), suited to 32-256 px radiographs.
    ``width=64`` is the original; the default 32 keeps CPU training practical."""

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, width, 2))
        blocks: list[nn.Module] = []
        c_prev = width
        for i, c in enumerate([width, width * 2, width * 4, width * 8]):
            blocks += [BasicBlock(c_prev, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            c_prev = c
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c_prev, num_classes)
        self.feature_dim = c_prev

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


CLASSIFIERS = {"small": SmallCNN, "resnet18": ResNet18}


def build_classifier(arch: str, num_classes: int, width: int | None = None) -> nn.Module:
    """A classifier by name (``small`` or ``resnet18``) with ``num_classes`` logits."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {arch!r}; use {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[arch](num_classes, **({"width": width} if width else {}))


def latent_side(size: int) -> int:
    """Spatial side of the autoencoder latent: Salehinejad et al.'s 16 at 256 px, scaled down with the image (64 px: 8)."""
    return int(min(16, max(4, size // 8)))


class ConvAutoencoder(nn.Module):
    """Salehinejad et al.'s convolutional autoencoder: strided convolutions down to a
    ``latent_side(S)``-square, 8-channel latent (256 px -> 16x16x8), transposed convolutions back.

    ``encode``: ``(N, 1, S, S)`` -> ``(N, 8, L, L)``; ``forward`` reconstructs in [-1, 1]; ``features`` is the
    flattened latent ``(N, 8*L*L)``, the space of the centroid study."""

    def __init__(self, size: int, width: int = 32, latent_channels: int = 8) -> None:
        super().__init__()
        side = latent_side(size)
        stages = int(math.log2(size // side))
        chans = [min(width * 2**i, width * 8) for i in range(stages)]
        enc: list[nn.Module] = []
        c_prev = 1
        for c in chans:
            enc += [nn.Conv2d(c_prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True)]
            c_prev = c
        enc += [nn.Conv2d(c_prev, latent_channels, 3, 1, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, c_prev, 3, 1, 1), nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True)]
        targets = chans[-2::-1] + [1]
        for i, c in enumerate(targets):
            dec += [nn.ConvTranspose2d(c_prev, c, 4, 2, 1)]
            dec += [nn.Tanh()] if i == len(targets) - 1 else [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_prev = c
        self.decoder = nn.Sequential(*dec)
        self.feature_dim = latent_channels * side * side

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))
