"""Feeding a prepared dataset to the loop: in-memory (or memory-mapped) uint8, epoch-shuffled batches."""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..models.base import Batch
from ..utils.tensors import to_model_range

IN_MEMORY_LIMIT = 4 << 30  # bytes; larger subsets are gathered from the memory map batch by batch


class TrainData:
    """The training subset of a dataset. ``labels`` index ``dataset.class_names`` (zeros for multi-label)."""

    def __init__(self, ds: PreparedDataset, split: str = "train", classes: list[str] | None = None) -> None:
        self.dataset = ds
        self.index = ds.indices(split, classes or None)
        if len(self.index) < 2:
            what = f"classes {', '.join(classes)}" if classes else "any class"
            raise CxrganError(f"{ds.root}: split {split!r} has {len(self.index)} image(s) of {what}; need at least 2")
        self.num_classes = len(ds.class_names)
        self.labels = np.zeros(len(self.index), np.int64) if ds.multilabel else np.asarray(ds.labels)[self.index].astype(np.int64)
        nbytes = len(self.index) * ds.size * ds.size
        self.images = np.asarray(ds.images[self.index]) if nbytes <= IN_MEMORY_LIMIT else None

    def __len__(self) -> int:
        return len(self.index)

    def uint8(self, rows: np.ndarray) -> np.ndarray:
        """Images ``(B, S, S)`` uint8 for positions ``rows`` of the subset."""
        if self.images is not None:
            return self.images[rows]
        order = np.argsort(rows)
        out = np.empty((len(rows),) + self.dataset.images.shape[1:], np.uint8)
        out[order] = self.dataset.images[self.index[rows[order]]]
        return out

    def batch(self, rows: np.ndarray, device: torch.device, channels_last: bool) -> Batch:
        x = to_model_range(torch.from_numpy(self.uint8(rows)).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x=x, y=torch.from_numpy(self.labels[rows]).to(device))


class EpochSampler:
    """Shuffled batches without replacement within an epoch; the order is a pure function of
    ``(seed, epoch)``, so the state is two counters and resume is exact."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        rows = self._perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return rows

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()
