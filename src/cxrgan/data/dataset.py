"""The prepared-dataset format: the only thing models ever see.

A prepared dataset is one directory::

    DATASET/
      images.npy     (N, S, S) uint8, memory-mappable (bright = dense)
      labels.npy     (N,) int64 class index, or (N, C) uint8 multi-hot for multi-label data
      splits.npy     (N,) uint8: 0 train, 1 val, 2 test
      masks.npy      (N, S, S) uint8 lesion masks (optional; the phantom has them)
      items.jsonl    one JSON object per image, in row order: origin, content hash, label, split, patient group
      manifest.json  source, preprocessing, class names, counts, skipped files with reasons, and the SHA-256
                     of every file above

The per-image records live in their own file (format version 2) so that opening a dataset reads a manifest
whose size does not grow with the number of images: a run on a million images does not parse a million
records it never uses. Version 1 datasets, whose records sit in ``manifest.json`` under ``items``, still open.

It is written by :class:`DatasetWriter` into a temporary directory and renamed into place when complete,
and opened by :class:`PreparedDataset` (memory-mapped by default, so a dataset larger than RAM works).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..version import __version__
from ..errors import CxrganError
from ..utils.io import atomic_directory, sha256_file, write_json_atomic
from .splits import SPLIT_NAMES

FORMAT = "cxrgan-dataset"
FORMAT_VERSION = 2
ARRAYS = ("images.npy", "labels.npy", "splits.npy")
ITEMS = "items.jsonl"


class NpyStream:
    """Writes a ``(count, *item_shape)`` uint8 ``.npy`` file row by row with plain sequential writes.

    Unlike a writable memmap, nothing accumulates in the process's resident memory, so peak memory does
    not grow with the number of rows. ``close`` fixes the header to the number of rows written.
    """

    def __init__(self, path: Path, capacity: int, item_shape: tuple[int, ...]) -> None:
        self.path, self.item_shape, self.count = Path(path), item_shape, 0
        self.fh = open(self.path, "wb")
        self.header_len = self._write_header(self.fh, capacity)

    def _write_header(self, fh, rows: int) -> int:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (rows,) + self.item_shape}
        start = fh.tell()
        np.lib.format.write_array_header_1_0(fh, header)
        return fh.tell() - start

    def write(self, row: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(row, dtype=np.uint8).tobytes())
        self.count += 1

    def close(self) -> None:
        row_bytes = int(np.prod(self.item_shape))
        probe = io.BytesIO()
        if self._write_header(probe, self.count) == self.header_len:
            self.fh.seek(0)
            self.fh.write(probe.getvalue())
            self.fh.truncate(self.header_len + self.count * row_bytes)
            self.fh.close()
            return
        # The header changed length (rare: a digit crossed a padding boundary): rewrite in chunks.
        self.fh.close()
        tmp = self.path.with_name(f".{self.path.name}.rewrite")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            self._write_header(dst, self.count)
            src.seek(self.header_len)
            left = self.count * row_bytes
            while left > 0:
                block = src.read(min(left, 64 << 20))
                dst.write(block)
                left -= len(block)
        tmp.replace(self.path)


class DatasetWriter:
    """Streams images (and masks) into ``.npy`` files in ``directory`` without holding them in memory.

    ``append`` stores one image; ``finalize`` fixes the arrays to the number appended and writes labels,
    splits, the per-image records and the manifest.
    """

    def __init__(self, directory: Path, capacity: int, size: int, with_masks: bool) -> None:
        self.dir = Path(directory)
        self.capacity, self.size, self.count = capacity, size, 0
        self.images = NpyStream(self.dir / "images.npy", capacity, (size, size))
        self.masks = NpyStream(self.dir / "masks.npy", capacity, (size, size)) if with_masks else None
        self._zeros = np.zeros((size, size), np.uint8)

    def append(self, image: np.ndarray, mask: np.ndarray | None = None) -> None:
        if self.count >= self.capacity:
            raise RuntimeError("DatasetWriter capacity exceeded")
        if image.shape != (self.size, self.size):
            raise ValueError(f"image shape {image.shape} != ({self.size}, {self.size})")
        self.images.write(image)
        if self.masks is not None:
            self.masks.write(mask if mask is not None else self._zeros)
        self.count += 1

    def finalize(self, labels: np.ndarray, splits: np.ndarray, manifest: dict[str, Any],
                 items: Iterable[dict[str, Any]]) -> None:
        """Close the arrays and write labels, splits, ``items.jsonl`` (one record per image, in row order) and the
        manifest, which records the SHA-256 of each of them."""
        if len(labels) != self.count or len(splits) != self.count:
            raise RuntimeError("labels/splits length does not match the images written")
        self.images.close()
        if self.masks is not None:
            self.masks.close()
        np.save(self.dir / "labels.npy", labels)
        np.save(self.dir / "splits.npy", splits.astype(np.uint8))
        n_items = 0
        with open(self.dir / ITEMS, "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, separators=(",", ":")) + "\n")
                n_items += 1
        if n_items not in (0, self.count):
            raise RuntimeError(f"{n_items} per-image records for {self.count} images")
        manifest = dict(manifest)
        manifest["arrays_sha256"] = {n: sha256_file(self.dir / n) for n in ARRAYS}
        manifest["items_sha256"] = sha256_file(self.dir / ITEMS)
        write_json_atomic(self.dir / "manifest.json", manifest)


def base_manifest(
    *, source: dict[str, Any], preprocess: dict[str, Any], class_names: Sequence[str], multilabel: bool,
    size: int, labels: np.ndarray, splits: np.ndarray, skipped: list[dict[str, str]],
    split_info: dict[str, Any], has_masks: bool,
) -> dict[str, Any]:
    """The manifest every prepared dataset carries (see the module docstring); :meth:`DatasetWriter.finalize` adds
    the files' hashes and writes the per-image records beside it."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "cxrgan_version": __version__,
        "source": source,
        "preprocess": preprocess,
        "size": size,
        "class_names": list(class_names),
        "task": "multilabel" if multilabel else "multiclass",
        "count": int(len(labels)),
        "counts": count_table(labels, splits, class_names, multilabel),
        "has_masks": has_masks,
        "splits": split_info,
        "skipped_count": len(skipped),
        "skipped": skipped,
    }


def count_table(labels: np.ndarray, splits: np.ndarray, class_names: Sequence[str], multilabel: bool) -> dict[str, dict[str, int]]:
    """``{split: {class: count}}`` (multi-label: images carrying each finding)."""
    table: dict[str, dict[str, int]] = {}
    for s, sname in enumerate(SPLIT_NAMES):
        sel = labels[splits == s]
        if multilabel:
            table[sname] = {c: int(sel[:, i].sum()) if len(sel) else 0 for i, c in enumerate(class_names)}
        else:
            table[sname] = {c: int((sel == i).sum()) for i, c in enumerate(class_names)}
    return table


@dataclass
class PreparedDataset:
    """A prepared dataset opened from disk.

    images: ``(N, S, S)`` uint8 (memory-mapped unless opened with ``mmap=False``).
    labels: ``(N,)`` int64, or ``(N, C)`` uint8 for multi-label. splits: ``(N,)`` uint8.
    """

    root: Path
    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    manifest: dict[str, Any]
    masks: np.ndarray | None = None
    _hash: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True) -> "PreparedDataset":
        """Open ``path``; raises :class:`CxrganError` naming what is missing or inconsistent."""
        root = Path(path)
        if not root.is_dir():
            raise CxrganError(f"dataset {root} does not exist; create it with `cxrgan prepare SOURCE --out {root}`")
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise CxrganError(f"{root} is not a prepared dataset (no manifest.json); create it with `cxrgan prepare`")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CxrganError(f"{mpath} is not valid JSON ({exc}); prepare the dataset again") from None
        if manifest.get("format") != FORMAT or manifest.get("version", 0) > FORMAT_VERSION:
            raise CxrganError(f"{mpath}: not a cxrgan dataset of a version this cxrgan reads (format {manifest.get('format')!r}, version {manifest.get('version')})")
        mode = "r" if mmap else None
        arrays = {}
        for name in ARRAYS + (("masks.npy",) if manifest.get("has_masks") else ()):
            try:
                arrays[name] = np.load(root / name, mmap_mode=mode, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CxrganError(f"{root / name}: missing or corrupt ({exc}); prepare the dataset again") from None
        n = manifest.get("count")
        if any(a.shape[0] != n for a in arrays.values()):
            raise CxrganError(f"{root}: array lengths do not match the manifest count {n}; the dataset is damaged, prepare it again")
        return cls(root, arrays["images.npy"], arrays["labels.npy"], arrays["splits.npy"], manifest, arrays.get("masks.npy"))

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def multilabel(self) -> bool:
        return self.manifest.get("task") == "multilabel"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of ``manifest.json`` (which itself hashes every array): identifies the exact data."""
        if self._hash is None:
            self._hash = sha256_file(self.root / "manifest.json")
        return self._hash

    def items(self) -> Iterator[dict[str, Any]]:
        """The per-image records (origin, content hash, label, split, patient group), in row order, read lazily
        from ``items.jsonl`` (from the manifest for a version 1 dataset); nothing when the dataset has none."""
        if "items" in self.manifest:
            yield from self.manifest["items"]
            return
        path = self.root / ITEMS
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    yield json.loads(line)
                except ValueError:
                    raise CxrganError(f"{path}, line {n}: not a JSON record; the dataset is damaged, prepare it again") from None

    def class_index(self, name: str) -> int:
        """Index of class ``name`` (case-insensitive); :class:`CxrganError` listing the classes otherwise."""
        for i, c in enumerate(self.class_names):
            if c == name or c.lower() == name.lower():
                return i
        raise CxrganError(f"unknown class {name!r}; {self.root} has: {', '.join(self.class_names)}")

    def indices(self, split: str | None = "train", classes: Sequence[str] | None = None) -> np.ndarray:
        """Sorted image indices in ``split`` (None: all) whose class is in ``classes`` (None: all)."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            if split not in SPLIT_NAMES:
                raise CxrganError(f"unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
            keep &= np.asarray(self.splits) == SPLIT_NAMES.index(split)
        if classes:
            ids = [self.class_index(c) for c in classes]
            labels = np.asarray(self.labels)
            keep &= labels[:, ids].any(axis=1) if self.multilabel else np.isin(labels, ids)
        return np.flatnonzero(keep)


def write_subset(ds: PreparedDataset, rows: np.ndarray, out: str | Path, source: dict[str, Any],
                 overwrite: bool = False) -> PreparedDataset:
    """Write rows ``rows`` of ``ds`` (images, labels, splits, masks, manifest items) as a new prepared dataset at
    ``out``. ``source`` describes how the subset was made (kept in the manifest with the parent's manifest hash)."""
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(ds.labels)[rows]
    splits = np.asarray(ds.splits)[rows]
    wanted = {int(r) for r in rows}
    picked = {i: it for i, it in enumerate(ds.items()) if i in wanted}
    items = [picked[int(r)] for r in rows] if picked else []
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        w = DatasetWriter(tmp, len(rows), ds.size, with_masks=ds.masks is not None)
        for i in rows:
            w.append(np.asarray(ds.images[i]), None if ds.masks is None else np.asarray(ds.masks[i]))
        w.finalize(labels, splits, base_manifest(
            source={**source, "parent": str(ds.root), "parent_manifest_sha256": ds.manifest_hash},
            preprocess=ds.manifest.get("preprocess", {}), class_names=ds.class_names, multilabel=ds.multilabel,
            size=ds.size, labels=labels, splits=splits, skipped=[],
            split_info=ds.manifest.get("splits", {}), has_masks=ds.masks is not None), items)
    return PreparedDataset.open(out)
