"""Input readers. :func:`open_source` picks one from the SOURCE string.

``phantom`` -> the embedded phantom generator; ``*.npz`` -> MedMNIST layout; ``*.parquet`` or a folder of
them -> Hugging Face parquet; a folder with ``--labels FILE.csv`` -> flat folder + labels CSV; any other
folder -> one sub-folder per class.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CxrganError
from .base import Record, Source, SourceOptions

__all__ = ["Record", "Source", "SourceOptions", "open_source"]


def open_source(spec: str, opts: SourceOptions, salt: bytes) -> Source:
    """Open ``spec`` (a path, ``phantom`` or ``digits``) as a :class:`Source`; raises :class:`CxrganError` for bad input."""
    if spec == "phantom":
        from .phantom import open_phantom

        return open_phantom(opts)
    if spec == "digits":
        from .digits import open_digits

        return open_digits(opts)
    path = Path(spec)
    if not path.exists():
        raise CxrganError(f"source {spec} does not exist; give a folder, a .npz or .parquet file, 'phantom' or 'digits'")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            from .npz import open_npz

            return open_npz(path, opts)
        if suffix == ".parquet":
            from .parquet import open_parquet

            return open_parquet(path, opts)
        if suffix == ".csv":
            raise CxrganError(f"{spec} is a CSV: pass the image folder as SOURCE and the CSV with --labels {spec}")
        raise CxrganError(f"{spec}: unsupported source file; use a folder, a .npz (MedMNIST layout) or a .parquet file")
    if opts.labels_csv:
        from .csvlabels import open_csv

        return open_csv(path, opts, salt)
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise CxrganError(f"source folder {spec} is empty; put one sub-folder of images per class in it")
    if next(path.rglob("*.parquet"), None) is not None:
        from .parquet import open_parquet

        return open_parquet(path, opts)
    from .folder import open_folder

    return open_folder(path, opts, salt)
