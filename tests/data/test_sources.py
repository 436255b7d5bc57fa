"""Every source kind reads into the prepared format with the right labels, splits and intensities."""

import json

import numpy as np

from cxrgan.data import Preprocess, SourceOptions, prepare

from .fixtures import write_dicom, write_parquet, write_raster


def _prep(src, out, size=32, **opts):
    return prepare(str(src), out, Preprocess(size=size), SourceOptions(**opts), progress=False, workers=1)


def test_class_folder_mixed_formats(tmp_path):
    src = tmp_path / "src"
    kinds = ["png8", "png16", "rgb_jpeg", "rgba_png", "bmp", "tiff"]
    for i, k in enumerate(kinds):
        ext = {"png8": "png", "png16": "png", "rgb_jpeg": "jpg", "rgba_png": "png", "bmp": "bmp", "tiff": "tif"}[k]
        write_raster(src / "NORMAL" / f"n{i}.{ext}", k, seed=i)
        write_raster(src / "PNEUMONIA" / "sub" / f"p{i}.{ext}", k, seed=10 + i)
    write_dicom(src / "PNEUMONIA" / "scan.dcm")
    write_dicom(src / "NORMAL" / "noext", patient_id="PAT-2")  # DICOM recognised by magic, no suffix
    ds = _prep(src, tmp_path / "out")
    assert ds.class_names == ["NORMAL", "PNEUMONIA"]
    assert len(ds) == 14 and ds.images.shape == (14, 32, 32) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [7, 7]
    # 12-bit data in a 16-bit PNG is scaled to the full range, not left nearly black.
    png16 = [i for i, it in enumerate(list(ds.items())) if it["origin"] == "NORMAL/n1.png"][0]
    assert ds.images[png16].max() > 200
    # An 8-bit PNG and its JPEG twin come out nearly identical.
    items = {it["origin"]: i for i, it in enumerate(list(ds.items()))}
    assert all(len(it["sha256"]) == 64 for it in list(ds.items()))
    assert "NORMAL/n0.png" in items


def test_same_content_same_pixels_across_formats(tmp_path):
    src = tmp_path / "src"
    write_raster(src / "A" / "x.png", "png8", seed=3)
    write_raster(src / "A" / "y.bmp", "bmp", seed=3)
    write_raster(src / "A" / "z.tif", "tiff", seed=3)
    write_raster(src / "A" / "w.png", "rgba_png", seed=3)
    ds = _prep(src, tmp_path / "out", size=64)
    imgs = np.asarray(ds.images, dtype=int)
    for k in range(1, 4):
        assert np.abs(imgs[0] - imgs[k]).max() <= 1


def test_split_folders_are_kept(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for c in ("NORMAL", "PNEUMONIA"):
            for i in range(n):
                write_raster(src / split / c / f"{c}{i}.png", seed=i)
    ds = _prep(src, tmp_path / "out")
    assert np.bincount(ds.splits).tolist() == [8, 4, 6]
    assert ds.manifest["splits"]["from_source"] is True


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1)).astype(np.uint16)
    src = tmp_path / "src"
    write_dicom(src / "A" / "m2.dcm", ramp)
    write_dicom(src / "A" / "m1.dcm", ramp, photometric="MONOCHROME1")
    write_dicom(src / "A" / "rs.dcm", ramp, slope=2.0, intercept=-1000.0, window=(1000.0, 2000.0))
    ds = _prep(src, tmp_path / "out")
    items = {it["origin"]: i for i, it in enumerate(list(ds.items()))}
    m2 = ds.images[items["A/m2.dcm"]].astype(int)
    m1 = ds.images[items["A/m1.dcm"]].astype(int)
    rs = ds.images[items["A/rs.dcm"]].astype(int)
    assert m2[:, -1].mean() > m2[:, 0].mean() + 150  # ramp rises left to right
    assert np.abs(m1 + m2 - 255).max() <= 2  # MONOCHROME1 is inverted to bright = dense
    # Window centre 1000, width 2000 on rescaled values 2*v-1000: saturates for v >= 1500 (about 3/8 across).
    assert (rs[:, 40:] >= 254).all() and rs[:, 0].mean() < 10


def test_csv_flat_folder_multilabel_and_patients(tmp_path):
    src = tmp_path / "images"
    rows = []
    findings = ["No Finding", "Pneumonia", "Effusion|Pneumonia", "Effusion", "No Finding", "Pneumonia"]
    for i, f in enumerate(findings):
        name = f"{i:08d}_000.png"
        write_raster(src / "images_001" / name, seed=i)
        rows.append(f"{name},{f},{i // 2}")
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Finding Labels,Patient ID\n" + "\n".join(rows) + "\nmissing.png,Effusion,9\n")
    ds = prepare(str(src), tmp_path / "single", Preprocess(size=32),
                 SourceOptions(labels_csv=str(csv), classes=["No Finding", "Pneumonia"]), progress=False, workers=1)
    assert ds.class_names == ["No Finding", "Pneumonia"]
    assert len(ds) == 5  # Effusion-only and the missing file are skipped; Effusion|Pneumonia keeps Pneumonia
    reasons = " ".join(s["reason"] for s in ds.manifest["skipped"])
    assert "not among the chosen classes" in reasons and "no such file" in reasons
    multi = prepare(str(src), tmp_path / "multi", Preprocess(size=32),
                    SourceOptions(labels_csv=str(csv), multilabel=True), progress=False, workers=1)
    assert multi.multilabel and multi.labels.shape == (6, 3)
    assert multi.class_names == ["Effusion", "No Finding", "Pneumonia"]
    row = [i for i, it in enumerate(list(multi.items())) if it["origin"].endswith("00000002_000.png")][0]
    assert multi.labels[row].tolist() == [1, 0, 1]
    assert len(multi.indices(None, ["Pneumonia"])) == 3
    # Patients 0..2 each own two images; a patient never spans two splits.
    groups = {}
    for it in list(multi.items()):
        groups.setdefault(it["group"], set()).add(it["split"])
    assert len(groups) == 3 and all(len(s) == 1 for s in groups.values())


def test_medmnist_npz_single_and_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 1))
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    ds = _prep(tmp_path / "pneumoniamnist.npz", tmp_path / "out")
    assert ds.class_names == ["normal", "pneumonia"]
    assert np.bincount(ds.splits).tolist() == [10, 4, 6]
    assert np.array_equal(ds.labels[:10], arrays["train_labels"].ravel())
    multi = {k: v for k, v in arrays.items()}
    for s in ("train", "val", "test"):
        multi[f"{s}_labels"] = rng.integers(0, 2, (len(arrays[f"{s}_images"]), 14))
    np.savez(tmp_path / "chestmnist.npz", **multi)
    cm = _prep(tmp_path / "chestmnist.npz", tmp_path / "out2")
    assert cm.multilabel and cm.labels.shape == (20, 14) and cm.class_names[1] == "cardiomegaly"


def test_parquet_hf_layout(tmp_path):
    root = tmp_path / "hf" / "data"
    write_parquet(root / "train-00000-of-00001.parquet", [0, 1, 1, 0, 1])
    write_parquet(root / "validation-00000-of-00001.parquet", [0, 1])
    write_parquet(root / "test-00000-of-00001.parquet", [1, 0, 0])
    ds = _prep(tmp_path / "hf", tmp_path / "out")
    assert ds.class_names == ["NORMAL", "PNEUMONIA"]
    assert len(ds) == 10 and np.bincount(ds.splits).tolist() == [5, 2, 3]
    train = ds.indices("train")
    assert ds.labels[train].tolist() == [0, 1, 1, 0, 1]
    single = _prep(root / "train-00000-of-00001.parquet", tmp_path / "one", classes=["PNEUMONIA"])
    assert len(single) == 3 and single.class_names == ["PNEUMONIA"]


def test_phantom_source_has_masks_and_mix(tmp_path):
    ds = prepare("phantom", tmp_path / "p", Preprocess(size=32), SourceOptions(count=50, mix=[0.2, 0.4, 0.4], seed=3),
                 progress=False, workers=1)
    assert ds.masks is not None and ds.masks.shape == (50, 32, 32)
    assert np.bincount(ds.labels, minlength=3).tolist() == [10, 20, 20]
    assert ds.masks[ds.labels == 0].sum() == 0 and ds.masks[ds.labels == 1].sum() > 0
    again = prepare("phantom", tmp_path / "q", Preprocess(size=32), SourceOptions(count=50, mix=[0.2, 0.4, 0.4], seed=3),
                    progress=False, workers=1)
    assert np.array_equal(np.asarray(ds.images), np.asarray(again.images))
    assert np.array_equal(ds.splits, again.splits)


def test_preprocess_pad_and_equalize(tmp_path):
    src = tmp_path / "src"
    write_raster(src / "A" / "wide.png", seed=1, shape=(40, 120))
    crop = _prep(src, tmp_path / "crop")
    pad = prepare(str(src), tmp_path / "pad", Preprocess(size=32, fit="pad", equalize=True), SourceOptions(),
                  progress=False, workers=1)
    assert crop.images[0].min() > 0  # crop: no border
    assert (pad.images[0][:5] == 0).all()  # pad: black bands above and below a wide image
    assert pad.manifest["preprocess"] == {"size": 32, "fit": "pad", "equalize": True, "intensity": "auto"}


def test_parallel_decoding_matches_serial(tmp_path):
    src = tmp_path / "src"
    for i in range(24):
        write_raster(src / ("A" if i % 2 else "B") / f"{i}.png", seed=i)
    one = prepare(str(src), tmp_path / "w1", Preprocess(size=32), progress=False, workers=1)
    two = prepare(str(src), tmp_path / "w2", Preprocess(size=32), progress=False, workers=2)
    assert np.array_equal(np.asarray(one.images), np.asarray(two.images))
    assert [it["origin"] for it in list(one.items())] == [it["origin"] for it in list(two.items())]
    assert json.loads((tmp_path / "w2" / "manifest.json").read_text())["count"] == 24


def test_digits_source_is_sklearns_bundled_digits(tmp_path):
    """`prepare digits`: the 1,797 bundled 8x8 digits at 32 px, classes "0"-"9", ink bright; --classes picks some."""
    from sklearn.datasets import load_digits

    ds = prepare("digits", tmp_path / "d", Preprocess(size=32), progress=False, workers=1)
    ref = load_digits()
    assert ds.class_names == [str(i) for i in range(10)] and len(ds) == len(ref.target) == 1797
    assert np.array_equal(np.asarray(ds.labels), ref.target)
    first = np.asarray(ds.images[0]).astype(float)
    assert first.shape == (32, 32) and first.max() > 200 and first[:, :2].mean() < 40  # bright ink, dark border
    ones = prepare("digits", tmp_path / "ones", Preprocess(size=32), SourceOptions(classes=["1", "7"]), progress=False, workers=1)
    assert ones.class_names == ["1", "7"] and len(ones) == int(((ref.target == 1) | (ref.target == 7)).sum())
