"""Decoders: one input item (a file, encoded bytes, an array, a phantom) -> preprocessed uint8 image.

Decoding runs in worker processes, so items are small picklable dataclasses and :func:`process` is a
module-level function. Errors that make one file unusable are raised as :class:`~cxrgan.errors.SkipFile`
with a message that names the file and what to do; ``prepare`` skips and lists such files (or stops with
``--strict``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SkipFile
from . import phantom
from .preprocess import Preprocess, normalize_intensity, preprocess, scale_window, square_offsets

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}

Image.MAX_IMAGE_PIXELS = 20000 * 20000  # large radiographs are legitimate; beyond this is a decompression bomb


@dataclass(frozen=True)
class FileItem:
    """An image file on disk; ``origin`` is its path relative to the source root."""

    path: str
    origin: str


@dataclass(frozen=True)
class BytesItem:
    """An encoded image held in memory (a parquet cell)."""

    data: bytes
    origin: str


@dataclass(frozen=True)
class ArrayItem:
    """A decoded image array (an npz entry), uint8 or float."""

    array: np.ndarray
    origin: str


@dataclass(frozen=True)
class PhantomItem:
    """One phantom to draw."""

    index: int
    label: int
    seed: int
    origin: str


Item = Union[FileItem, BytesItem, ArrayItem, PhantomItem]


@dataclass
class Decoded:
    """A processed item: ``image`` ``(S, S)`` uint8, optional ``mask``, content hash, salted patient key."""

    origin: str
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    sha256: str = ""
    patient: str | None = None
    error: str | None = None
    note: str = ""  # what was done to make it a radiograph (first frame of a series, colour to grey)


def is_dicom_file(path: Path) -> bool:
    """True for ``.dcm``-like names or files with the DICOM preamble magic ``DICM`` at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _pil_to_unit(im: Image.Image, prep: Preprocess) -> np.ndarray:
    """Any PIL image (1/L/LA/P/RGB/RGBA/I;16/I/F) -> square grayscale float32 in [0, 1].

    Large images are squared and box-reduced inside Pillow (to no less than twice the output size, as
    ``resize(reducing_gap=2)`` would) before anything is converted to NumPy; the intensity window is taken
    from the full-resolution image first, so the result matches normalizing at full size.
    """
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Composite transparent pixels onto black (no X-ray signal), then take luminance.
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if im.mode not in ("L", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("L")
    deep = im.mode != "L"
    lo, hi = im.getextrema() if deep or prep.intensity != "auto" else (0, 255)
    if im.mode == "I" and prep.intensity == "auto" and lo >= 0 and hi <= 255:
        lo, hi = 0, 255  # 8-bit data stored in a 32-bit container
    f = im.convert("F")
    w, h = f.size
    if w != h:
        s, dy, dx = square_offsets(h, w, prep.fit)
        if prep.fit == "crop":
            f = f.crop((dx, dy, dx + s, dy + s))
        else:
            canvas = Image.new("F", (s, s), float(lo))
            canvas.paste(f, (dx, dy))
            f = canvas
    factor = f.size[0] // (2 * prep.size)
    if factor >= 2:
        f = f.reduce(factor)
    arr = np.asarray(f, dtype=np.float32)
    if prep.intensity == "percentile":
        return normalize_intensity(arr, "percentile", 16)
    return scale_window(arr, lo, hi)


def im_size(data: bytes | str) -> str:
    """``W x H`` as an image header declares it (read without the size check), or ``an unreadable number of``."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            return f"{im.size[0]} x {im.size[1]}"
    except Exception:
        return "an unreadable number of"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def decode_raster(data: bytes | str, origin: str, prep: Preprocess) -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF from bytes or a path to float32 [0, 1] grayscale."""
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if im.format == "JPEG":
            # Decode at a reduced DCT scale when the file is much larger than the target.
            im.draft("L", (prep.size * 2, prep.size * 2))
        im.load()
    except Image.DecompressionBombError:
        raise SkipFile(f"{origin}: the header declares {im_size(data)} pixels, beyond any radiograph (a corrupt header or "
                       "a decompression bomb); not decoded") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SkipFile(f"{origin}: cannot decode image ({exc}); the file is corrupt, truncated or not an image") from None
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    return _pil_to_unit(im, prep)


def quiet_decoders() -> None:
    """Keep the decoders' own log records (pydicom, Pillow: tracebacks of files they cannot read) off the console;
    the reason a file is skipped reaches the user once, in the summary. ``CXRGAN_DEBUG=1`` (``--debug``) lets them
    through."""
    debug = os.environ.get("CXRGAN_DEBUG") == "1"
    for name in ("pydicom", "PIL"):
        lg = logging.getLogger(name)
        lg.propagate = debug
        if not any(isinstance(h, logging.NullHandler) for h in lg.handlers):
            lg.addHandler(logging.NullHandler())


def to_single_frame(arr: np.ndarray, samples_per_pixel: int) -> tuple[np.ndarray, str]:
    """A 2-D grey image from DICOM pixel data: the first frame of a series, colour converted to grey (ITU-R 601
    weights, as for PNG); with a note saying what was done."""
    notes = []
    colour = samples_per_pixel > 1 or (arr.ndim >= 3 and arr.shape[-1] in (3, 4) and samples_per_pixel != 1)
    frames = arr.ndim - (1 if colour else 0)
    if frames == 3:
        notes.append(f"first frame of {arr.shape[0]}")
        arr = arr[0]
    if colour and arr.ndim == 3:
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        notes.append("colour converted to grey")
    return arr, "; ".join(notes)


def decode_dicom(data: bytes | str, origin: str, prep: Preprocess, salt: bytes) -> tuple[np.ndarray, str | None, str]:
    """Decode a DICOM file to float32 [0, 1] (bright = dense), a salted hash of its PatientID and a note (first
    frame of a series, colour to grey; empty when nothing was needed).

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or window, then inverts
    MONOCHROME1. Nothing identifying is returned: the patient id only leaves as a salted hash.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise SkipFile(f"{origin}: cannot read DICOM ({exc}); the file is corrupt or not DICOM") from None
    try:
        return _dicom_pixels(ds, origin, prep, salt)
    except SkipFile:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:  # elements parse lazily
        raise SkipFile(f"{origin}: corrupt DICOM header ({type(exc).__name__}: {exc}); the file cannot be used") from None


def _dicom_pixels(ds, origin: str, prep: Preprocess, salt: bytes) -> tuple[np.ndarray, str | None, str]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise SkipFile(f"{origin}: DICOM file has no pixel data (a report or structured document?); remove it from the source")
    try:  # the header's declared size, checked before anything is allocated
        declared = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("SamplesPerPixel", 1) or 1)
        declared *= max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        declared = 0
    if declared > 4 * Image.MAX_IMAGE_PIXELS:
        raise SkipFile(f"{origin}: DICOM header declares {ds.get('Rows')} x {ds.get('Columns')} pixels"
                       f"{'' if int(ds.get('NumberOfFrames', 1) or 1) <= 1 else ' per frame, ' + str(ds.get('NumberOfFrames')) + ' frames'}, "
                       "beyond any radiograph (a corrupt header or a decompression bomb); not decoded")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing handlers and bad data
        text = str(exc)
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        lower = text.lower()
        if "is not supported" in lower and ts is not None and ts.is_compressed:
            raise SkipFile(f"{origin}: compressed DICOM ({name}) has no decoder here (cxrgan installs decoders for JPEG, "
                           "JPEG-LS, JPEG 2000 and RLE); convert the file to an uncompressed transfer syntax (e.g. "
                           "`gdcmconv --raw IN OUT`) or `pip install python-gdcm`") from None
        if "missing" in lower and ("dependenc" in lower or "plugin" in lower) or "no pixel data handler" in lower:
            raise SkipFile(
                f"{origin}: compressed DICOM ({name}) needs a decoder that is not installed; "
                "install one with `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` "
                "(JPEG, JPEG-LS, JPEG 2000) or `pip install python-gdcm`"
            ) from None
        if "plugin" in lower or "decoder" in lower:  # decoders are there, and every one failed on this file
            first = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip()), text.splitlines()[0] if text else "")
            raise SkipFile(f"{origin}: cannot decode compressed DICOM ({name}): the installed decoders failed "
                           f"({first}); the file is probably corrupt") from None
        raise SkipFile(f"{origin}: cannot decode DICOM pixel data ({text}); the file may be truncated") from None
    try:
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        spp = 1
    arr, note = to_single_frame(np.asarray(arr), spp)
    if arr.ndim != 2:
        raise SkipFile(f"{origin}: DICOM pixel data has shape {arr.shape}; expected a 2-D radiograph")
    arr = apply_modality_lut(arr, ds)
    windowed = "WindowCenter" in ds or "VOILUTSequence" in ds
    if windowed:
        arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float32)
    mode = "minmax" if prep.intensity == "auto" else prep.intensity
    out = normalize_intensity(arr, mode, 16)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out
    pid = str(getattr(ds, "PatientID", "") or "").strip()
    patient = hashlib.sha256(salt + pid.encode("utf-8")).hexdigest() if pid else None
    return out, patient, note


def process(item: Item, prep: Preprocess, salt: bytes = b"") -> Decoded:
    """Decode and preprocess one item. Never raises for bad input: failures come back in ``error``. The decoders'
    own warnings and log records stay off the console (see :func:`quiet_decoders`)."""
    quiet_decoders()
    try:
        with warnings.catch_warnings():
            if os.environ.get("CXRGAN_DEBUG") != "1":
                warnings.simplefilter("ignore")
            return _process(item, prep, salt)
    except SkipFile as exc:
        return Decoded(origin=item.origin, error=str(exc))
    except MemoryError:
        return Decoded(origin=item.origin, error=f"{item.origin}: image too large to decode in memory")
    except Exception as exc:  # a decoder bug must not kill a 100k-image prepare; the file is listed
        return Decoded(origin=item.origin, error=f"{item.origin}: unexpected decoding failure ({type(exc).__name__}: {exc})")


def _process(item: Item, prep: Preprocess, salt: bytes) -> Decoded:
    patient = None
    mask = None
    note = ""
    if isinstance(item, PhantomItem):
        img, mask = phantom.render(item.index, item.label, size=max(prep.size, 128), seed=item.seed)
        digest = ""
    elif isinstance(item, ArrayItem):
        arr = np.asarray(item.array)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if arr.ndim != 2:
            raise SkipFile(f"{item.origin}: array of shape {arr.shape} is not a 2-D image")
        img = normalize_intensity(arr, prep.intensity, 8 if arr.dtype == np.uint8 else 16)
        digest = hashlib.sha256(np.ascontiguousarray(item.array).tobytes()).hexdigest()
    else:
        if isinstance(item, FileItem):
            try:
                data = Path(item.path).read_bytes()
            except OSError as exc:
                raise SkipFile(f"{item.origin}: cannot read file ({exc.strerror or exc})") from None
            suffix = Path(item.path).suffix.lower()
        else:
            data, suffix = item.data, ""
        if not data:
            raise SkipFile(f"{item.origin}: file is empty (0 bytes)")
        digest = hashlib.sha256(data).hexdigest()
        if suffix in DICOM_SUFFIXES or data[128:132] == b"DICM":
            img, patient, note = decode_dicom(data, item.origin, prep, salt)
        else:
            img = decode_raster(data, item.origin, prep)
    u8, mask_out = preprocess(img, prep, mask)
    return Decoded(origin=item.origin, image=u8, mask=mask_out, sha256=digest, patient=patient, note=note)
