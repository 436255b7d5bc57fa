"""The README's main job runs end to end (tiny budget) and reuses finished stages on a second run."""

import json

from cxrgan.cli import main


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "32", "--count", "60", "--steps", "4", "--quiet"]) == 0
    for f in ("preview.png", "class_balance.json", "runs/dcgan/plots/losses.png", "runs/dcgan/checkpoints/last.json",
              "synthetic/manifest.json", "compare/summary.md", "compare/samples.png"):
        assert (out / f).is_file(), f
    balance = json.loads((out / "class_balance.json").read_text())
    assert sum(balance["totals"].values()) == 60 and balance["imbalance_ratio"] > 1
    first = capsys.readouterr().out
    assert "training DCGAN" in first
    assert main(["demo", "--out", str(out), "--size", "32", "--count", "60", "--steps", "4", "--quiet"]) == 0
    assert "training DCGAN" not in capsys.readouterr().out  # finished stages are reused
