"""Bad input gets one clear message naming the file and what to do; inputs are never modified."""

import subprocess
import sys

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.data import Preprocess, SourceOptions, prepare
from cxrgan.errors import CxrganError

from .fixtures import tree_digest, write_dicom, write_parquet, write_raster


@pytest.fixture
def messy(tmp_path):
    """A class folder with good images and every kind of unusable file."""
    src = tmp_path / "src"
    for i in range(3):
        write_raster(src / "NORMAL" / f"ok{i}.png", seed=i)
        write_raster(src / "PNEUMONIA" / f"ok{i}.jpg", "rgb_jpeg", seed=i)
    good = (src / "NORMAL" / "ok0.png").read_bytes()
    (src / "NORMAL" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "NORMAL" / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (src / "NORMAL" / "empty.png").write_bytes(b"")
    (src / "PNEUMONIA" / "notes.txt").write_text("radiologist notes")
    write_dicom(src / "PNEUMONIA" / "report.dcm", pixels=False)
    return src


def test_unreadable_files_are_skipped_listed_and_inputs_untouched(messy, tmp_path, caplog):
    before = tree_digest(messy)
    ds = prepare(str(messy), tmp_path / "out", Preprocess(size=32), progress=False, workers=1)
    assert len(ds) == 6
    reasons = {s["origin"]: s["reason"] for s in ds.manifest["skipped"]}
    assert set(reasons) == {"NORMAL/truncated.png", "NORMAL/garbage.jpg", "NORMAL/empty.png",
                            "PNEUMONIA/notes.txt", "PNEUMONIA/report.dcm"}
    assert "no pixel data" in reasons["PNEUMONIA/report.dcm"]
    assert "not an image file" in reasons["PNEUMONIA/notes.txt"]
    assert "empty" in reasons["NORMAL/empty.png"]
    assert "corrupt" in reasons["NORMAL/garbage.jpg"] or "cannot decode" in reasons["NORMAL/garbage.jpg"]
    assert ds.manifest["skipped_count"] == 5
    assert tree_digest(messy) == before


def test_strict_stops_at_first_unusable_file_and_leaves_nothing(messy, tmp_path):
    with pytest.raises(CxrganError, match="notes.txt|truncated.png|garbage.jpg|empty.png|report.dcm"):
        prepare(str(messy), tmp_path / "out", Preprocess(size=32), strict=True, progress=False, workers=1)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_compressed_dicom_without_decoder_names_the_package(tmp_path):
    """The JPEG 2000 decoder is installed with the project: a broken J2K stream is reported as a corrupt file;
    a compressed syntax with no decoder at all (MPEG-2) says how to convert the file or which package reads it."""
    src = tmp_path / "src"
    write_dicom(src / "A" / "j2k.dcm", compressed=True)
    write_dicom(src / "A" / "mpeg2.dcm", compressed=True, transfer_syntax="1.2.840.10008.1.2.4.100")
    write_raster(src / "A" / "ok.png")
    ds = prepare(str(src), tmp_path / "out", Preprocess(size=32), progress=False, workers=1)
    reasons = {s["origin"]: s["reason"] for s in ds.manifest["skipped"]}
    assert "installed decoders failed" in reasons["A/j2k.dcm"] and "corrupt" in reasons["A/j2k.dcm"]
    assert "no decoder" in reasons["A/mpeg2.dcm"] and "gdcm" in reasons["A/mpeg2.dcm"]


@pytest.mark.parametrize("case, match", [
    ("empty_folder", "is empty"),
    ("empty_class", "contains no images"),
    ("wrong_class", "unknown class 'PNEUMONA'"),
    ("bad_size", "--size 100 is not supported"),
    ("exists", "already exists"),
    ("csv_label_column", "no column 'Diagnosis'"),
    ("npz_label_value", "is not a class index"),
    ("parquet_label_column", "cannot find a label column"),
    ("missing", "does not exist"),
    ("not_npz", "cannot open as .npz"),
])
def test_user_errors_are_one_clear_message(tmp_path, case, match):
    src = tmp_path / "src"
    src.mkdir()
    opts = SourceOptions()
    size = 32
    out = tmp_path / "out"
    if case == "empty_class":
        write_raster(src / "NORMAL" / "a.png")
        (src / "COVID").mkdir()
    elif case == "wrong_class":
        write_raster(src / "PNEUMONIA" / "a.png")
        opts = SourceOptions(classes=["PNEUMONA"])
    elif case == "bad_size":
        write_raster(src / "A" / "a.png")
        size = 100
    elif case == "exists":
        write_raster(src / "A" / "a.png")
        out.mkdir()
    elif case == "csv_label_column":
        write_raster(src / "a.png")
        (tmp_path / "l.csv").write_text("Image Index,Finding Labels\na.png,Pneumonia\n")
        opts = SourceOptions(labels_csv=str(tmp_path / "l.csv"), label_column="Diagnosis")
    elif case == "npz_label_value":
        src = tmp_path / "pneumoniamnist.npz"
        np.savez(src, train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.array([[0], [1], [7]]))
    elif case == "parquet_label_column":
        import pyarrow as pa
        import pyarrow.parquet as pq

        src = tmp_path / "x.parquet"
        pq.write_table(pa.table({"image": [b"x"], "diagnosis": [0]}), src)
    elif case == "missing":
        src = tmp_path / "nothing-here"
    elif case == "not_npz":
        src = tmp_path / "fake.npz"
        src.write_bytes(b"nope")
    with pytest.raises(CxrganError, match=match) as info:
        prepare(str(src), out, Preprocess(size=size), opts, progress=False, workers=1)
    assert "\n" not in str(info.value)


def test_cli_prints_one_line_without_traceback(tmp_path, capsys):
    rc = main(["prepare", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("cxrgan: error: source ") and "Traceback" not in err and err.count("\n") == 1


def test_cli_process_exit_code_and_debug(tmp_path):
    cmd = [sys.executable, "-m", "cxrgan", "info", str(tmp_path / "nope")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "cxrgan prepare" in res.stderr
    dbg = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert "Traceback" in dbg.stderr


def test_interrupted_prepare_leaves_no_dataset(tmp_path, monkeypatch):
    """A crash mid-way (here: in the writer) leaves neither the output nor its temporary directory."""
    from cxrgan.data import dataset

    src = tmp_path / "src"
    for i in range(5):
        write_raster(src / "A" / f"{i}.png", seed=i)
    calls = {"n": 0}
    real_append = dataset.DatasetWriter.append

    def failing_append(self, image, mask=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_append(self, image, mask)

    monkeypatch.setattr(dataset.DatasetWriter, "append", failing_append)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), tmp_path / "out", Preprocess(size=32), progress=False, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_overwrite_replaces_only_when_complete(tmp_path):
    src = tmp_path / "src"
    write_raster(src / "A" / "a.png")
    prepare(str(src), tmp_path / "out", Preprocess(size=32), progress=False, workers=1)
    ds = prepare(str(src), tmp_path / "out", Preprocess(size=64), overwrite=True, progress=False, workers=1)
    assert ds.size == 64 and sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_no_patient_identity_in_any_output(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_dicom(src / "A" / f"s{i}.dcm", patient_id=f"PAT-SECRET-{i // 2}")
    out = tmp_path / "out"
    ds = prepare(str(src), out, Preprocess(size=32), progress=False, workers=1)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in (b"PAT-SECRET", b"Doe^Johnathan", b"Johnathan", b"19710203", b"ACC98765"):
        assert secret not in blob
    # Grouping still works: two patients, two images each, never split across train/val/test.
    groups = {}
    for it in list(ds.items()):
        groups.setdefault(it["group"], set()).add(it["split"])
    assert len(groups) == 2 and all(len(s) == 1 for s in groups.values())


def test_parquet_label_not_in_class_names(tmp_path):
    write_parquet(tmp_path / "train.parquet", [0, 1, 2])
    with pytest.raises(CxrganError, match="not one of the classes"):
        prepare(str(tmp_path / "train.parquet"), tmp_path / "o", Preprocess(size=32), progress=False, workers=1)
