"""Does bf16 autocast cost GAN quality? Several seeds of the same DCGAN training in fp32 and in bf16, best FD in the
dataset's validated feature space (the training-time quality space), compared with the seed-to-seed spread.

    python benchmarks/bf16_quality.py --data PREPARED --seeds 0,1,2,3,4 --steps 400 --results docs/results/bf16

The dataset needs a validated feature space in $CXRGAN_CACHE (`cxrgan features train` and
`cxrgan evaluate --check-features`), or the figures fall back to randconv-v1 (printed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--results", help="folder for summary.md and runs.csv")
    a = ap.parse_args()

    import torch

    from cxrgan.train.config import load_config
    from cxrgan.train.loop import train
    from cxrgan.train.rundir import read_run
    from cxrgan.runtime.execution import native_bf16

    seeds = [int(s) for s in a.seeds.split(",")]
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16(torch.device('cpu'))}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                cfg = load_config(None, ["model.family=dcgan", f"data.path={a.data}", f"steps={a.steps}",
                                         f"batch_size={a.batch_size}", f"model.g_channels={a.channels}",
                                         f"model.d_channels={a.channels}", f"ckpt_every={max(1, a.steps // 4)}",
                                         "eval_samples=512", f"seed={seed}", f"precision={precision}", "device=cpu"])
                out = Path(tmp) / f"{precision}-{seed}"
                t = time.perf_counter()
                res = train(cfg, out, progress=False)
                dt = time.perf_counter() - t
                space = read_run(out)[1]["quality_space"]["ident"]
                rows.append({"seed": seed, "precision": precision, "best_fd": res.best_fd, "seconds": dt, "space": space})
                print(f"seed {seed} {precision}: best FD {res.best_fd:.4f} ({space}), {dt:.0f} s", flush=True)
    summary = {}
    for p in ("fp32", "bf16"):
        fds = [r["best_fd"] for r in rows if r["precision"] == p]
        secs = [r["seconds"] for r in rows if r["precision"] == p]
        summary[p] = (statistics.mean(fds), statistics.stdev(fds) if len(fds) > 1 else 0.0, statistics.mean(secs))
    diffs = [next(r["best_fd"] for r in rows if r["seed"] == s and r["precision"] == "bf16")
             - next(r["best_fd"] for r in rows if r["seed"] == s and r["precision"] == "fp32") for s in seeds]
    md = ["| precision | best FD mean | std over seeds | seconds per run |", "|---|---|---|---|"]
    md += [f"| {p} | {m:.4f} | {sd:.4f} | {t:.0f} |" for p, (m, sd, t) in summary.items()]
    d_mean = statistics.mean(diffs)
    d_sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    verdict = (f"paired difference bf16 - fp32 over {len(seeds)} seeds: {d_mean:+.4f} ± {d_sd:.4f} "
               f"(standard error {d_sd / max(1, len(diffs)) ** 0.5:.4f})")
    print("\n".join(md))
    print(verdict)
    if a.results:
        res_dir = Path(a.results)
        res_dir.mkdir(parents=True, exist_ok=True)
        (res_dir / "runs.csv").write_text("seed,precision,best_fd,seconds,space\n" + "".join(
            f"{r['seed']},{r['precision']},{r['best_fd']:.6f},{r['seconds']:.1f},{r['space']}\n" for r in rows))
        (res_dir / "summary.md").write_text(f"# bf16 against fp32: DCGAN, {a.steps} steps, batch {a.batch_size}, "
                                            f"{Path(a.data).name}\n\n" + "\n".join(md) + f"\n\n{verdict}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
