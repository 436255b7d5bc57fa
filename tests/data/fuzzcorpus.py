"""Corrupted input files for fuzzing the input side (``tests/data/test_fuzz.py`` keeps a small fixed sample,
``benchmarks/fuzz_inputs.py`` runs a few hundred): truncated, bit-flipped and random files, wrong extensions,
zero-size files, headers declaring huge images, DICOM with a broken transfer syntax."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .fixtures import write_dicom


def _valid(kind: str, rng: np.random.Generator) -> bytes:
    img = (rng.random((48, 40)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    if kind == "dcm":
        path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / f"cxrgan-fuzz-{rng.integers(1 << 30)}.dcm"
        write_dicom(path, (img.astype(np.uint16) * 16))
        data = path.read_bytes()
        path.unlink()
        return data
    Image.fromarray(img).save(buf, format={"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP"}[kind])
    return buf.getvalue()


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def huge_dicom(rows: int = 65_535, cols: int = 65_535, frames: int = 1000) -> bytes:
    """A DICOM file whose header declares a gigantic multi-frame image over a few bytes of pixel data."""
    import pydicom

    path = Path("/tmp") / f"cxrgan-fuzz-huge-{rows}-{cols}-{frames}.dcm"
    write_dicom(path, np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.save_as(path)
    data = path.read_bytes()
    path.unlink()
    return data


def broken_syntax_dicom() -> bytes:
    """A DICOM file whose transfer syntax UID is not a valid UID."""
    data = _valid("dcm", np.random.default_rng(0))
    uid = b"1.2.840.10008.1.2.1"
    return data.replace(uid, b"9.9.9.9.9.9.9.9.9.9", 1)


def make_corpus(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` corrupted files (plus the special cases) into ``folder/A`` and ``folder/B``; return them."""
    rng = np.random.default_rng(seed)
    kinds = ["png", "jpg", "tif", "bmp", "dcm"]
    valid = {k: _valid(k, rng) for k in kinds}
    files: list[tuple[str, bytes]] = [
        ("huge.png", huge_png()), ("huge_dicom.dcm", huge_dicom()), ("broken_syntax.dcm", broken_syntax_dicom()),
        ("empty.png", b""), ("empty.dcm", b""), ("text.jpg", b"this is not an image\n" * 10),
    ]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        data = valid[kind]
        how = ["truncate", "flip", "random", "wrong_ext", "prefix"][(i // len(kinds)) % 5]
        if how == "truncate":
            data = data[: int(rng.integers(1, len(data)))]
        elif how == "flip":
            b = bytearray(data)
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 16))):
                b[pos] ^= 1 << int(rng.integers(8))
            data = bytes(b)
        elif how == "random":
            data = rng.bytes(int(rng.integers(1, 4096)))
        elif how == "wrong_ext":
            kind = kinds[(i + 1) % len(kinds)]  # a valid file under another kind's extension
        else:
            data = rng.bytes(int(rng.integers(1, 200))) + data
        files.append((f"{i:04d}_{how}.{kind}", data))
    out = []
    for j, (name, data) in enumerate(files):
        path = folder / ("A" if j % 2 == 0 else "B") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(path)
    return out
