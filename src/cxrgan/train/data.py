"""Feeding a prepared dataset to the loop: uint8 images in memory, or read from disk batch by batch;
epoch-shuffled batches."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..models.base import Batch
from ..utils.tensors import to_model_range

IN_MEMORY_LIMIT = 4 << 30  # bytes; larger subsets are read from disk batch by batch


class RowReader:
    """Rows of a memory-mapped ``.npy`` array read with ``pread``: the pages land in the kernel's page cache, not
    in this process's resident memory (touching a memory map would count every page ever read), so memory stays
    flat however large the dataset is."""

    def __init__(self, array: np.memmap) -> None:
        self.shape, self.dtype = array.shape[1:], array.dtype
        self.row_bytes = int(np.prod(self.shape)) * array.dtype.itemsize
        self.offset = int(array.offset)
        self.fd = os.open(array.filename, os.O_RDONLY)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows),) + self.shape, self.dtype)
        for k, r in enumerate(rows):
            buf = os.pread(self.fd, self.row_bytes, self.offset + int(r) * self.row_bytes)
            if len(buf) != self.row_bytes:
                raise CxrganError(f"images.npy ended early (row {int(r)}): the dataset file is truncated; prepare it again")
            out[k] = np.frombuffer(buf, self.dtype).reshape(self.shape)
        return out

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


class TrainData:
    """The training subset of a dataset. ``labels`` index ``dataset.class_names`` (zeros for multi-label).
    ``in_memory``: ``auto`` (up to :data:`IN_MEMORY_LIMIT` bytes), ``always`` or ``never``."""

    def __init__(self, ds: PreparedDataset, split: str = "train", classes: list[str] | None = None, in_memory: str = "auto") -> None:
        self.dataset = ds
        self.index = ds.indices(split, classes or None)
        if len(self.index) < 2:
            what = f"classes {', '.join(classes)}" if classes else "any class"
            raise CxrganError(f"{ds.root}: split {split!r} has {len(self.index)} image(s) of {what}; need at least 2")
        self.num_classes = len(ds.class_names)
        self.labels = np.zeros(len(self.index), np.int64) if ds.multilabel else np.asarray(ds.labels)[self.index].astype(np.int64)
        nbytes = len(self.index) * ds.size * ds.size
        keep = in_memory == "always" or (in_memory == "auto" and nbytes <= IN_MEMORY_LIMIT)
        self.images = np.asarray(ds.images[self.index]) if keep else None
        self.reader = RowReader(ds.images) if not keep and isinstance(ds.images, np.memmap) else None

    def __len__(self) -> int:
        return len(self.index)

    def uint8(self, rows: np.ndarray) -> np.ndarray:
        """Images ``(B, S, S)`` uint8 for positions ``rows`` of the subset."""
        if self.images is not None:
            return self.images[rows]
        order = np.argsort(rows)  # ascending file offsets
        out = np.empty((len(rows),) + self.dataset.images.shape[1:], np.uint8)
        src = self.index[rows[order]]
        out[order] = self.reader.read(src) if self.reader is not None else self.dataset.images[src]
        return out

    def batch(self, rows: np.ndarray, device: torch.device, channels_last: bool) -> Batch:
        x = to_model_range(torch.from_numpy(self.uint8(rows)).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x=x, y=torch.from_numpy(self.labels[rows]).to(device), rows=np.asarray(rows, np.int64))


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
