"""Fuzz the input side: a few hundred corrupted files (truncated PNG/JPEG/TIFF/BMP/DICOM, bit flips, random bytes,
wrong extensions, zero-size files, headers declaring 100,000 x 100,000 images, a broken transfer syntax) through
`prepare` and, given a dgm run, `decompose`. Prints files, prepared, skipped, crashes, failures the readers did
not understand, and peak memory.

    python benchmarks/fuzz_inputs.py --n 300 [--dgm-run RUN]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dgm-run", help="a dgm run: also feed the files to decompose")
    a = ap.parse_args()

    import torch

    from cxrgan.data import Preprocess, prepare
    from tests.data.fuzzcorpus import make_corpus

    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_corpus(Path(tmp) / "src", a.n, a.seed)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        crashes = 0
        try:
            ds = prepare(str(Path(tmp) / "src"), Path(tmp) / "out", Preprocess(size=64), progress=False, workers=1)
            prepared, skipped = len(ds), ds.manifest["skipped"]
        except Exception as exc:  # counted: a crash is what the fuzzing looks for
            crashes, prepared, skipped = 1, 0, []
            print(f"prepare CRASHED: {type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t
        unexpected = [s for s in skipped if "unexpected" in s["reason"]]
        print(f"prepare: {len(files)} files, {prepared} prepared, {len(skipped)} skipped with a reason, {crashes} crashes, "
              f"{len(unexpected)} failures the readers did not understand, {dt:.1f} s")
        for s in unexpected[:10]:
            print("  unexpected:", s["origin"], s["reason"][:160])
        if a.dgm_run:
            from cxrgan.decompose import decompose

            try:
                rows = decompose(a.dgm_run, [Path(tmp) / "src"], Path(tmp) / "dec", device="cpu")
                bad = [r for r in rows if r["error"]]
                print(f"decompose: {len(rows)} inputs, {len(rows) - len(bad)} decomposed, {len(bad)} refused with a reason, 0 crashes")
            except Exception as exc:
                print(f"decompose CRASHED: {type(exc).__name__}: {exc}")
                crashes += 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB (at start {rss0:.0f} MiB); a single 100,000 x 100,000 8-bit image would need 9,537 MiB")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
