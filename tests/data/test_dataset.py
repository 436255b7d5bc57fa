"""The prepared-dataset round trip, memory mapping, summaries, and the real data when present."""

import json

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.data import Preprocess, PreparedDataset, SourceOptions, prepare
from cxrgan.data.summary import balance_summary, info_text, preview
from cxrgan.errors import CxrganError

from ..conftest import KERMANY, REAL_NPZ


def test_round_trip_memmap_and_hashes(phantom32):
    ds = PreparedDataset.open(phantom32)
    assert isinstance(ds.images, np.memmap)
    full = PreparedDataset.open(phantom32, mmap=False)
    assert not isinstance(full.images, np.memmap)
    assert np.array_equal(np.asarray(ds.images), full.images)
    assert ds.labels.dtype == np.int64 and ds.splits.dtype == np.uint8
    m = ds.manifest
    assert m["format"] == "cxrgan-dataset" and m["count"] == len(ds) == 600
    assert sum(sum(v.values()) for v in m["counts"].values()) == 600
    assert len(ds.manifest_hash) == 64
    from cxrgan.utils.io import sha256_file

    assert m["arrays_sha256"]["images.npy"] == sha256_file(phantom32 / "images.npy")
    assert m["items_sha256"] == sha256_file(phantom32 / "items.jsonl")


def test_per_image_records_live_beside_the_manifest(phantom32, tmp_path):
    """The manifest's size does not grow with the images; records are read lazily, and version 1 datasets (records
    inside the manifest) still open."""
    import shutil

    ds = PreparedDataset.open(phantom32)
    assert ds.manifest["version"] == 2 and "items" not in ds.manifest
    items = list(ds.items())
    assert len(items) == len(ds) and [it["label"] for it in items] == ds.labels.tolist()
    assert [it["split"] for it in items] == ds.splits.tolist() and all("origin" in it for it in items)
    assert (phantom32 / "manifest.json").stat().st_size < 8_000 < (phantom32 / "items.jsonl").stat().st_size
    old = tmp_path / "v1"
    shutil.copytree(phantom32, old)
    man = json.loads((old / "manifest.json").read_text())
    man.update(version=1, items=items)
    man.pop("items_sha256")
    (old / "manifest.json").write_text(json.dumps(man))
    (old / "items.jsonl").unlink()
    assert list(PreparedDataset.open(old).items()) == items
    from cxrgan.data.dataset import write_subset

    part = write_subset(PreparedDataset.open(old), np.array([5, 2, 9]), tmp_path / "sub", {"kind": "subset"})
    assert list(part.items()) == [items[5], items[2], items[9]] and part.manifest["version"] == 2
    broken = tmp_path / "broken"
    shutil.copytree(phantom32, broken)
    (broken / "items.jsonl").write_text("{not json\n")
    with pytest.raises(CxrganError, match="items.jsonl, line 1"):
        list(PreparedDataset.open(broken).items())


def test_indices_by_split_and_class(phantom32):
    ds = PreparedDataset.open(phantom32)
    train_p = ds.indices("train", ["pneumonia"])  # case-insensitive
    assert len(train_p) > 0 and (ds.labels[train_p] == 1).all() and (ds.splits[train_p] == 0).all()
    with pytest.raises(CxrganError, match="unknown class 'CANCER'"):
        ds.indices("train", ["CANCER"])


def test_memory_mapped_dataset_reads_without_loading(tmp_path):
    """A dataset is used through a memmap: slicing reads only the rows asked for."""
    ds = prepare("phantom", tmp_path / "d", Preprocess(size=32), SourceOptions(count=40), progress=False, workers=1)
    rows = ds.images[[1, 5, 7]]
    assert rows.shape == (3, 32, 32) and str(ds.images.filename).endswith("images.npy")


def test_damaged_dataset_is_reported(tmp_path):
    ds = prepare("phantom", tmp_path / "d", Preprocess(size=32), SourceOptions(count=10), progress=False, workers=1)
    (ds.root / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(CxrganError, match="labels.npy: missing or corrupt"):
        PreparedDataset.open(tmp_path / "d")
    with pytest.raises(CxrganError, match="not a prepared dataset"):
        PreparedDataset.open(tmp_path)


def test_info_preview_and_balance(phantom32, tmp_path, capsys):
    ds = PreparedDataset.open(phantom32)
    text = info_text(ds)
    assert "NORMAL" in text and "COVID" in text and "imbalance" in text
    out = preview(ds, tmp_path / "p.png", per_class=4)
    from PIL import Image

    im = Image.open(out)
    assert im.size[1] >= 3 * 32
    bal = balance_summary(ds)
    assert bal["totals"] == {"NORMAL": 240, "PNEUMONIA": 180, "COVID": 180}
    assert main(["info", str(phantom32)]) == 0 and "PNEUMONIA" in capsys.readouterr().out
    assert main(["preview", str(phantom32), "--out", str(tmp_path / "q.png")]) == 0
    assert (tmp_path / "q.png").is_file()


@pytest.mark.skipif(not REAL_NPZ.is_file(), reason="shared real data not present")
def test_real_npz_keeps_splits_and_counts(tmp_path):
    ds = prepare(str(REAL_NPZ), tmp_path / "real", Preprocess(size=32), progress=False)
    assert ds.class_names == ["NORMAL", "PNEUMONIA"]
    assert ds.manifest["counts"]["train"] == {"NORMAL": 938, "PNEUMONIA": 2694}
    assert ds.manifest["counts"]["test"] == {"NORMAL": 201, "PNEUMONIA": 578}
    with np.load(REAL_NPZ) as z:
        first = z["train_images"][0]
    from PIL import Image

    ref = np.asarray(Image.fromarray(first.astype(np.float32) / 255.0, mode="F").resize((32, 32), Image.LANCZOS, reducing_gap=2.0))
    assert np.abs(ds.images[0].astype(float) - np.clip(np.rint(ref * 255), 0, 255)).max() <= 1


@pytest.mark.skipif(not KERMANY.is_dir(), reason="shared real data not present")
def test_real_kermany_folder_grouped_by_patient(tmp_path):
    ds = prepare(str(KERMANY), tmp_path / "k", Preprocess(size=64),
                 SourceOptions(patient_regex=r"(person\d+|NORMAL2-IM-\d+|IM-\d+)"), progress=False)
    assert ds.class_names == ["NORMAL", "PNEUMONIA"] and len(ds) == 80
    assert ds.manifest["splits"]["by_patient"] is True
    groups = {}
    for it in list(ds.items()):
        groups.setdefault(it["group"], set()).add(it["split"])
    assert all(len(s) == 1 for s in groups.values())
    # Real radiographs: mid-range mean, real contrast, and the RGB JPEGs decoded to gray.
    imgs = np.asarray(ds.images, dtype=float)
    assert 60 < imgs.mean() < 190 and imgs.std() > 30
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["skipped_count"] == 0


@pytest.mark.parametrize("capacity, count", [(10, 10), (10, 7), (1000, 999), (10**7, 3), (10**15, 2)])
def test_npy_stream_fixes_header_to_rows_written(tmp_path, capacity, count):
    from cxrgan.data.dataset import NpyStream

    s = NpyStream(tmp_path / "a.npy", capacity, (4, 5))
    for i in range(count):
        s.write(np.full((4, 5), i % 250, np.uint8))
    s.close()
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (count, 4, 5) and a[:, 0, 0].tolist() == [i % 250 for i in range(count)]
    assert not list(tmp_path.glob(".*rewrite"))
