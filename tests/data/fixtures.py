"""Writers of small input files for the data tests: rasters, DICOM, parquet, CSV."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..conftest import radiograph


def write_raster(path: Path, kind: str = "png8", seed: int = 0, shape=(80, 96)) -> np.ndarray:
    """Write an image of ``kind`` (png8, png16, rgb_jpeg, rgba_png, bmp, tiff) and return its float content."""
    img = radiograph(*shape, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = (img * 255).astype(np.uint8)
    if kind == "png8":
        Image.fromarray(u8).save(path)
    elif kind == "png16":
        Image.fromarray((img * 4095).astype(np.uint16)).save(path)  # 12-bit data in a 16-bit PNG
    elif kind == "rgb_jpeg":
        Image.fromarray(np.stack([u8] * 3, -1)).save(path, quality=95)
    elif kind == "rgba_png":
        Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 255)])).save(path)
    elif kind == "bmp":
        Image.fromarray(u8).save(path, format="BMP")
    elif kind == "tiff":
        Image.fromarray(u8).save(path, format="TIFF")
    else:
        raise ValueError(kind)
    return img


def png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((radiograph(40, 40, seed) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_dicom(
    path: Path, arr: np.ndarray | None = None, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
    intercept: float = 0.0, window: tuple[float, float] | None = None, patient_id: str = "PAT-0001",
    pixels: bool = True, compressed: bool = False, transfer_syntax: str | None = None,
) -> np.ndarray:
    """Write a DICOM radiograph with identifying tags (so tests can check none leaks)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

    if arr is None:
        arr = (radiograph(64, 64) * 4000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or (JPEG2000Lossless if compressed else ExplicitVRLittleEndian)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Johnathan"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19710203"
    ds.AccessionNumber = "ACC98765"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels:
        if compressed:
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = arr.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return arr


def write_parquet(path: Path, labels: list[int], names=("NORMAL", "PNEUMONIA"), hf_metadata: bool = True) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "image_file_path": [f"img{i}.png" for i in range(len(labels))],
        "image": [{"bytes": png_bytes(i), "path": None} for i in range(len(labels))],
        "labels": labels,
    })
    if hf_metadata:
        features = {"image": {"_type": "Image"}, "labels": {"names": list(names), "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every file's bytes under ``root`` (to prove inputs are never modified)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
