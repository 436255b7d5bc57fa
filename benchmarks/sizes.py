"""What an image size costs: training speed and peak memory of every family at 64, 128 and 256 px.

For each size, embedded phantoms are prepared at that size; then, each in a fresh process (so its peak resident
memory is its own), the plain eager fp32 DCGAN loop of ``cxrgan bench`` (the reference, measured in this run) and
every family through cxrgan's training loop at its defaults (default precision, channels-last, the width the image
size sets: ``cxrgan.train.config.default_width``), or with the ``--set`` overrides given. Printed and
written to ``--out`` (Markdown): images/s, the ratio to the reference at the same size, images/s relative to the
family's own 64 px figure, peak resident memory (CPU) or peak allocated memory (GPU), and the time a 50-epoch run
on the shared real split (3,632 training images) would take at that speed, beside the machine line (device,
threads, CPU capability, bf16).

    python benchmarks/sizes.py --sizes 64,128,256 --out docs/results/sizes/speed.md
    python benchmarks/sizes.py --sizes 64,128 --set model.g_channels=64 --set model.d_channels=64   # one width
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

TRAIN_IMAGES = 3632  # cxr_real_64 / cxr_real_128 training split
EPOCHS = 50

CHILD = r"""
import json, resource, sys, torch
from pathlib import Path
from cxrgan.bench import loop_speed, reference_loop
from cxrgan.data import PreparedDataset
from cxrgan.runtime.execution import pick_device
kind, data, work, batch, iters, device = sys.argv[1:7]
overrides = sys.argv[7:]
dev = pick_device(device)
if kind == "reference":
    ds = PreparedDataset.open(data)
    images = torch.from_numpy(ds.images[: min(len(ds), 1024)].copy()).unsqueeze(1).float() / 127.5 - 1
    speed = reference_loop(images, int(batch), int(iters), dev)
else:
    speed = loop_speed(Path(data), Path(work), kind, int(batch), int(iters), "auto", device, overrides=overrides)
peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"img_per_s": speed, "peak_mib": peak}))
"""


def measure(kind: str, data: Path, work: Path, batch: int, iters: int, device: str, overrides: Sequence[str] = ()) -> dict:
    """One variant in a process of its own (a family with config ``overrides``): ``{"img_per_s", "peak_mib"}``."""
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(data), str(work), str(batch), str(iters), device, *overrides],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--families", default="gan,dcgan,cgan,bigan,semicond,dgm")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10, help="timed steps per variant (after warm-up)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every family (e.g. model.g_channels=64); repeatable")
    ap.add_argument("--out", help="write the table as Markdown here too")
    a = ap.parse_args()

    from cxrgan.bench import machine_line
    from cxrgan.data import Preprocess, SourceOptions, prepare
    from cxrgan.runtime.execution import pick_device

    machine = machine_line(pick_device(a.device))
    print(machine)
    settings = f"families at their defaults with {', '.join(a.set)}" if a.set else "families at their defaults"
    lines = [f"Machine: {machine}. Batch {a.batch_size}, {a.iters} timed steps per variant, each variant in a process "
             f"of its own, {settings}; 50-epoch time = {EPOCHS} x {TRAIN_IMAGES:,} images / images per second (evaluation not "
             "counted).", "",
             "| size | variant | img/s | vs reference | vs its 64 px | peak memory (MiB) | 50 epochs (min) |",
             "|---|---|---|---|---|---|---|"]
    base: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cxrgan-sizes-") as tmp:
        work = Path(tmp)
        for size in (int(s) for s in a.sizes.split(",")):
            data = work / f"phantom{size}"
            prepare("phantom", data, Preprocess(size=size), SourceOptions(count=max(512, 2 * a.batch_size)), progress=False)
            ref = measure("reference", data, work, a.batch_size, a.iters, a.device)
            variants = [("reference (plain eager DCGAN, fp32)", "reference")] + [(f, f) for f in a.families.split(",")]
            for name, kind in variants:  # each row printed as soon as it is measured
                r = ref if kind == "reference" else measure(kind, data, work, a.batch_size, a.iters, a.device, a.set)
                speed = r["img_per_s"]
                if size == 64:
                    base[name] = speed
                rel = f"{speed / base[name]:.2f}x" if name in base else ""
                minutes = EPOCHS * TRAIN_IMAGES / speed / 60
                line = (f"| {size} | {name} | {speed:.1f} | {speed / ref['img_per_s']:.2f}x | {rel} | {r['peak_mib']:.0f} | "
                        f"{minutes:.0f} |")
                print(line, flush=True)
                lines.append(line)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
