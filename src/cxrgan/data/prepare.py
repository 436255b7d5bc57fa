"""``prepare``: any source -> one prepared dataset, streaming, in parallel, atomically.

Items are decoded and preprocessed in worker processes with a bounded number in flight, and written in
source order into memory-mapped arrays in a temporary directory (``.NAME.partial-XXXX``) that is renamed
to the output only when the manifest is complete. Peak memory does not grow with the number of images.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import CxrganError
from ..utils.progress import progress_bar
from .dataset import DatasetWriter, PreparedDataset, base_manifest
from .decode import Decoded, Item, process
from .preprocess import Preprocess
from .sources import Source, SourceOptions, open_source
from .splits import names_look_patient_keyed, assign_splits

log = logging.getLogger("cxrgan.prepare")

_BATCH = 8  # items per worker task


@dataclass(frozen=True)
class SplitOptions:
    """Fractions (train, val, test) and seed for splits the source does not fix."""

    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0


def _work(batch: list[Item], prep: Preprocess, salt: bytes) -> list[Decoded]:
    return [process(item, prep, salt) for item in batch]


def _batched(items: Iterator[Item], n: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for it in items:
        batch.append(it)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _pool_context() -> mp.context.BaseContext:
    """``fork`` where it is safe (Linux, no other thread alive): fast, and works from scripts without a
    ``__main__`` guard. Otherwise ``forkserver`` (Linux) or ``spawn``."""
    if sys.platform.startswith("linux"):
        return mp.get_context("fork" if threading.active_count() == 1 else "forkserver")
    return mp.get_context("spawn")


def _decode_stream(source: Source, prep: Preprocess, salt: bytes, pool, workers: int) -> Iterator[Decoded]:
    """Decoded items in source order; with a pool, at most ``4 * workers`` batches in flight."""
    if pool is None:
        for item in source.items():
            yield process(item, prep, salt)
        return
    limit = 4 * workers
    pending: collections.deque = collections.deque()
    for batch in _batched(source.items(), _BATCH):
        pending.append(pool.apply_async(_work, (batch, prep, salt)))
        if len(pending) >= limit:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


def default_workers(n_items: int) -> int:
    """Worker processes: one per core, but in-process for small jobs where start-up would dominate."""
    if n_items < 200:
        return 1
    return max(1, min(os.cpu_count() or 1, 16))


def _decode_into(writer: DatasetWriter, partial: IO[str], skipped: list[dict], stream: Iterable[Decoded], src: Any,
                 strict: bool, bar: Any) -> tuple[list[int], list[str | None]]:
    """Append every decoded image of ``stream`` (in record order) to ``writer`` and its record to the temporary
    ``partial`` file; unreadable ones go to ``skipped`` (or stop the run when ``strict``). Returns the indices of
    the records kept and their patient keys."""
    kept: list[int] = []
    patients: list[str | None] = []
    for i, dec in enumerate(stream):
        bar.update(1)
        if dec.error is not None:
            if strict:
                raise CxrganError(f"{dec.error} (--strict stops at the first unusable file)")
            skipped.append({"origin": dec.origin, "reason": dec.error.split(": ", 1)[-1]})
            continue
        writer.append(dec.image, dec.mask)
        kept.append(i)
        rec = src.records[i]
        patients.append(rec.patient or dec.patient)
        meta = {"origin": rec.origin, "sha256": dec.sha256, **({"note": dec.note} if dec.note else {})}
        partial.write(json.dumps(meta, separators=(",", ":")) + "\n")
    return kept, patients


def _labels_and_strata(src: Any, recs: list) -> tuple[np.ndarray, list[int]]:
    """The labels array of the kept records (multi-hot ``uint8`` for multi-label sources, else ``int64``) and the
    class each is stratified by (multi-label: its first positive class, or an extra stratum for none)."""
    if src.multilabel:
        labels = np.asarray([r.label for r in recs], dtype=np.uint8).reshape(len(recs), len(src.class_names))
        return labels, [int(np.argmax(v)) if np.any(v) else len(src.class_names) for v in labels]
    labels = np.asarray([r.label for r in recs], dtype=np.int64)
    return labels, labels.tolist()


def prepare(
    source: str,
    out: str | os.PathLike[str],
    preprocess: Preprocess | None = None,
    options: SourceOptions | None = None,
    split: SplitOptions | None = None,
    *,
    strict: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Read ``source`` and write a prepared dataset to ``out``; return it opened.

    source: a folder (class sub-folders, or flat with ``options.labels_csv``), a ``.npz`` (MedMNIST
        layout), a ``.parquet`` file or folder, or ``"phantom"``.
    Unreadable files are skipped and listed in the manifest (``strict=True`` stops at the first).
    Raises :class:`CxrganError` for anything the user must fix.
    """
    from ..utils.io import atomic_directory

    prep = preprocess or Preprocess()
    opts = options or SourceOptions()
    split = split or SplitOptions()
    out = Path(out)
    if out.exists() and not overwrite:
        raise CxrganError(f"output {out} already exists; choose another --out or pass --overwrite to replace it")
    salt = secrets.token_bytes(16)  # per run, never stored: patient keys cannot be reversed or linked
    src = open_source(source, opts, salt)
    if not src.records:
        raise CxrganError(f"source {source} has no images for the chosen classes")
    if strict and src.skipped:
        s = src.skipped[0]
        raise CxrganError(f"{s['origin']}: {s['reason']} (--strict stops at the first unusable file)")
    n_workers = workers if workers is not None else default_workers(len(src.records))

    pool = _pool_context().Pool(n_workers) if n_workers > 1 else None  # before any progress-bar thread
    with pool or contextlib.nullcontext(), atomic_directory(out, overwrite=overwrite) as tmp, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=tmp) as partial:  # per-image records, completed below
        writer = DatasetWriter(tmp, len(src.records), prep.size, src.has_masks)
        skipped = list(src.skipped)
        bar = progress_bar(len(src.records), progress, desc=f"prepare {Path(source).name}", unit="img")
        try:
            kept, patients = _decode_into(writer, partial, skipped, _decode_stream(src, prep, salt, pool, n_workers),
                                          src, strict, bar)
        finally:
            bar.close()
        if not kept:
            reasons = "; ".join(s["reason"] for s in skipped[:3])
            raise CxrganError(f"no image in {source} could be read (first reasons: {reasons})")
        recs = [src.records[i] for i in kept]
        labels, strata = _labels_and_strata(src, recs)
        groups_present = any(p is not None for p in patients)
        splits = assign_splits(strata, patients, [r.split for r in recs], split.fractions, split.seed)
        group_ids = _group_numbers(patients)
        manifest = base_manifest(
            source=src.describe(), preprocess=prep.to_dict(), class_names=src.class_names,
            multilabel=src.multilabel, size=prep.size, labels=labels, splits=splits, skipped=skipped,
            has_masks=src.has_masks, split_info={**asdict(split), "by_patient": groups_present,
                                                 "from_source": all(r.split >= 0 for r in recs)},
        )
        partial.seek(0)
        writer.finalize(labels, splits, manifest, _completed(partial, labels, splits, group_ids, src.multilabel))
    if skipped:
        log.warning("skipped %d unusable file(s); see 'skipped' in %s", len(skipped), out / "manifest.json")
    pattern = None if groups_present else names_look_patient_keyed([r.origin for r in recs])
    if pattern:
        log.warning("warning: the file names look like they carry patient ids (pattern %r) but no --patient-regex or "
                    "--patient-column was given, so one patient's images may sit in several splits and inflate every "
                    "figure measured on them; prepare again with e.g. --patient-regex '(person\\d+)_'", pattern)
    return PreparedDataset.open(out)


def _completed(partial: IO[str], labels: np.ndarray, splits: np.ndarray, group_ids: Sequence[int | None],
               multilabel: bool) -> Iterator[dict]:
    """The per-image records written during decoding, one per line, completed with label, split and group: streamed,
    so a million images never sit in memory as a million dicts."""
    for line, lab, s, g in zip(partial, labels, splits, group_ids):
        meta = json.loads(line)
        meta["label"] = lab.tolist() if multilabel else int(lab)
        meta["split"] = int(s)
        if g is not None:
            meta["group"] = g
        yield meta


def _group_numbers(patients: Sequence[str | None]) -> list[int | None]:
    """Replace salted patient keys by small integers (order of first appearance): auditable, not linkable."""
    ids: dict[str, int] = {}
    return [None if p is None else ids.setdefault(p, len(ids)) for p in patients]
