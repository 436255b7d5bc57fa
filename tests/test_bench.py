"""``cxrgan bench``: the reference and every asked family are timed in one run, with the machine's capability."""

import re

import torch

from cxrgan.bench import family_flops, reference_flops
from cxrgan.cli import main


def test_bench_prints_every_family_against_the_reference(phantom32, capsys):
    assert main(["bench", "--families", "dcgan,dgm", "--data", str(phantom32), "--batch-size", "8", "--iters", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in out and "bf16 " in out
    rows = {m.group(1).strip(): (float(m.group(2)), float(m.group(3))) for m in
            re.finditer(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+\d+$", out, re.M)}
    assert rows["reference: plain eager DCGAN loop, fp32"][1] == 1.0
    for fam in ("dcgan", "dgm"):
        speed, ratio = next(v for k, v in rows.items() if k.startswith(f"{fam}: default"))
        assert speed > 0 and ratio > 0
    assert not any(k.startswith("cgan") for k in rows)
    drawn = re.search(r"^  dcgan: ([\d.]+) img/s, ([\d.]+)x the reference; 1,000 images in ([\d.]+) s$", out, re.M)
    assert drawn and float(drawn.group(1)) > 0 and "  dgm:" not in out  # the dgm translates images: no sampling row


def test_bench_rejects_an_unknown_family(phantom32, capsys):
    assert main(["bench", "--families", "stylegan", "--data", str(phantom32), "--iters", "1"]) == 2
    assert "unknown family 'stylegan'" in capsys.readouterr().err


def test_step_flops_follow_the_architecture(phantom32):
    # The counted work of cxrgan's DCGAN step at default width is of the order of the reference's (same
    # architecture family), and a wider generator costs more.
    ref = reference_flops(32, 4)
    dc = family_flops("dcgan", phantom32, batch=4)
    assert 0.3 * ref < dc < 3 * ref
    assert family_flops("dcgan", phantom32, batch=4, overrides=["model.g_channels=128"]) > dc
