"""`prepare` over the DICOM files that pydicom ships (real files from many vendors and transfer syntaxes, none
written by us), as a new user would run it: no crash, no traceback on the console, every file prepared or
skipped with a reason, compressed DICOM decoded out of the box, multi-frame and colour files taken as grey."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrgan.data import PreparedDataset


def _corpus() -> list[Path]:
    import pydicom

    return sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))


def test_prepare_reads_the_pydicom_corpus(tmp_path):
    files = _corpus()
    if len(files) < 20:
        pytest.skip(f"pydicom's test files are not installed here ({len(files)} found)")
    src = tmp_path / "src"
    for i, f in enumerate(files):  # two class folders, alternating
        dest = src / ("A" if i % 2 == 0 else "B") / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CXRGAN_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "cxrgan", "--quiet", "prepare", str(src), "--size", "32", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "Warning" not in console, console[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    items = list(PreparedDataset.open(out).items())
    prepared, skipped = len(items), manifest["skipped"]
    assert prepared + len(skipped) == len(files)
    assert all(s["reason"] for s in skipped)
    # The decoders come with the project: nothing is skipped for want of one.
    assert not [s for s in skipped if "not installed" in s["reason"]], skipped
    # 58 of pydicom 3.0's 78 files; the rest have no pixel data or are broken on purpose.
    assert prepared >= 0.7 * len(files), (prepared, [s["reason"] for s in skipped])
    notes = [i["note"] for i in items if "note" in i]
    assert any("first frame of" in n for n in notes) and any("colour converted to grey" in n for n in notes)
