"""The README's main job, shortened: every stage runs, the report is written last, and a second run reuses
finished stages (and reruns those downstream of a stage that had to run again)."""

import json
import shutil

from cxrgan.cli import main
from cxrgan.data import PreparedDataset
from cxrgan.demo import STAGES


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    for f in ("data/phantom32/manifest.json", "runs/dcgan/checkpoints/last.json", "runs/cgan/checkpoints/last.json",
              "runs/dgm/checkpoints/last.json", "synthetic/cgan/manifest.json", "features/classifier/extractor.json",
              "feature_check/check.json",
              "evaluation/metrics.json", "evaluation/label_agreement.md", "tstr/tstr.json", "anomaly/anomaly.json", "decomposition/scores.csv",
              "compare/summary.md", "report.html", "demo.json", "timings.json"):
        assert (out / f).is_file(), f
    # the report's path and the command that opens the app on the same folder come last
    assert first.strip().splitlines()[-2:] == [f"the report: {(out / 'report.html').resolve()}",
                                               f"to look and try in the browser: cxrgan app {out}"]
    agreement = json.loads((out / "evaluation" / "metrics.json").read_text())["label_agreement"]
    assert [r["class"] for r in agreement] == ["NORMAL", "PNEUMONIA", "COVID"]  # the CGAN draws every class
    assert all(0 <= r["synthetic_agreement"] <= 1 and 0 <= r["real_agreement"] <= 1 for r in agreement)
    assert sum(r["n_synthetic"] for r in agreement) == len(PreparedDataset.open(out / "synthetic" / "cgan").labels)
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {s.name for s in STAGES} | {"report"}
    html = (out / "report.html").read_text()
    for anchor in ("data-0", "runs-0", "runs-1", "runs-2", "features-0", "evaluation-0", "tstr-0", "anomaly-0", "decomposition-0"):
        assert f'id="{anchor}"' in html, anchor

    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    second = capsys.readouterr().out
    assert "training" not in second and second.count("done already, reused") == len(STAGES)

    # A stage whose output is lost runs again, and so does everything that depends on it.
    shutil.rmtree(out / "synthetic")
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    third = capsys.readouterr().out
    for name in ("sample", "evaluate", "tstr"):
        assert f"[{name}]\n" in third, name
    for name in ("train cgan", "anomaly", "decompose"):
        assert f"[{name}] done already" in third, name
