"""The README's main job on the embedded phantom data: prepare, preview, class balance."""

from __future__ import annotations

import logging
from pathlib import Path

from .data import Preprocess, PreparedDataset, SourceOptions, prepare
from .data.summary import balance_summary, info_text, preview
from .utils.io import write_json_atomic

log = logging.getLogger("cxrgan.demo")


def prepare_demo_data(out: Path, size: int, count: int, quiet: bool) -> PreparedDataset:
    """The phantom dataset of the demo, prepared once and reused on later runs."""
    path = out / f"phantom{size}"
    if (path / "manifest.json").is_file():
        return PreparedDataset.open(path)
    return prepare("phantom", path, Preprocess(size=size), SourceOptions(count=count, seed=0), progress=not quiet)


def run_demo(out: Path, size: int = 64, count: int = 1500, steps: int | None = None, quiet: bool = False) -> None:
    """Prepare the phantom data and write a preview grid and a class-balance summary under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ds = prepare_demo_data(out, size, count, quiet)
    print(info_text(ds))
    preview(ds, out / "preview.png")
    write_json_atomic(out / "class_balance.json", balance_summary(ds))
    print(f"\nwrote {out / 'preview.png'} and {out / 'class_balance.json'}")
