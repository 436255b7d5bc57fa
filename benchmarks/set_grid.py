"""Synthetic sets side by side: one row per set and class, the first ``--per-class`` images of each class.

Sets drawn by ``cxrgan sample`` with the same ``--seed`` and class plan start image *i* of a class from the same
latent (for ``ddpm``: the same initial noise), so the columns compare settings or runs image for image.

    python benchmarks/set_grid.py SET_A:"label A" SET_B:"label B" --out grid.jpg --per-class 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxrgan.data.dataset import PreparedDataset
from cxrgan.utils.images import labelled_rows
from cxrgan.utils.io import atomic_path


def rows_of(path: Path, label: str, per_class: int) -> tuple[list[np.ndarray], list[str]]:
    """The first ``per_class`` images of each class of the set at ``path``, one row per class, labelled
    ``"label, CLASS"``."""
    ds = PreparedDataset.open(path)
    rows, names = [], []
    for name in ds.class_names:
        idx = ds.indices(None, [name])[:per_class]
        if len(idx):
            rows.append(np.asarray(ds.images[idx]))
            names.append(f"{label}, {name}")
    return rows, names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="SET_DIR or SET_DIR:LABEL (a synthetic set or any prepared dataset)")
    ap.add_argument("--out", required=True, help="image to write (.png or .jpg)")
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--scale", type=int, default=2, help="enlargement (nearest neighbour)")
    a = ap.parse_args()
    rows, names = [], []
    for spec in a.sets:
        path, _, label = spec.partition(":")
        r, n = rows_of(Path(path), label or Path(path).name, a.per_class)
        rows += r
        names += n
    image = labelled_rows(rows, names, scale=a.scale).convert("RGB")
    out = Path(a.out)
    with atomic_path(out) as tmp:
        image.save(tmp, format="JPEG" if out.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=90)
    print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
