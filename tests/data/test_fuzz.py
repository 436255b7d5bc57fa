"""A small fixed sample of corrupted inputs through `prepare` (and through `decompose` in test_dgm.py's verbs):
every file is prepared or skipped with a reason, nothing crashes, no huge declared image is allocated."""

from __future__ import annotations

import resource

from cxrgan.data import Preprocess, prepare

from .fuzzcorpus import make_corpus


def test_corrupted_files_are_skipped_with_reasons_and_memory_stays_bounded(tmp_path):
    files = make_corpus(tmp_path / "src", 40, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = prepare(str(tmp_path / "src"), tmp_path / "out", Preprocess(size=32), progress=False, workers=1)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    skipped = {s["origin"]: s["reason"] for s in ds.manifest["skipped"]}
    assert len(ds) + len(skipped) == len(files)
    assert all(skipped.values())
    by_name = {k.split("/")[-1]: v for k, v in skipped.items()}
    assert "beyond any radiograph" in by_name["huge_dicom.dcm"]
    assert "100000 x 100000 pixels, beyond any radiograph" in by_name["huge.png"]
    assert "empty" in by_name["empty.png"] and "empty" in by_name["empty.dcm"]
    assert "corrupt DICOM header" in by_name["broken_syntax.dcm"] and "cannot decode" in by_name["text.jpg"]
    assert not [r for r in skipped.values() if "unexpected" in r]  # every failure is one the reader understands
    assert grew_mib < 500, grew_mib  # a 100,000 x 100,000 image was never allocated (it would need 10 GB)
