"""Benchmark: DCGAN training throughput of cxrgan's loop against a plain eager reference loop.

The reference is the textbook DCGAN loop (``cxrgan.bench.reference_loop``: Radford et al.'s architecture,
fp32, contiguous tensors, data already in memory, standard Adam, BCE-with-logits, written out independently), measured in the same
run on the same machine at the same image size and batch. cxrgan is measured through its real training
loop (``cxrgan.train``), with every variant the loop offers on this device: fp32 and bf16 autocast, each
with channels-last. Then a same-budget quality comparison of bf16 against fp32 (FD in the fixed feature
space, lower is better), which decides whether bf16 may be a default. On a GPU it also prints the
fraction of the GPU's measured bf16 matrix throughput that training reaches.

    python benchmarks/bench_train.py [--size 64] [--batch 64] [--iters 30] [--quality-steps 300]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrgan.bench import loop_speed, matmul_tflops, reference_flops, reference_loop


def best_fd_after(data: Path, work: Path, steps: int, precision: str, device: str) -> float | None:
    """Best FD (the loop's own selection) of a DCGAN trained ``steps`` steps at batch 64, channels-last."""
    from cxrgan.train.config import load_config
    from cxrgan.train.loop import train

    run = work / f"quality-{precision}-{steps}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_config(None, [f"data.path={data}", "model.family=dcgan", "batch_size=64", f"steps={steps}",
                             f"precision={precision}", "channels_last=true", f"device={device}", "log_every=5",
                             f"ckpt_every={max(50, steps // 4)}", f"grid_every={10**9}", "eval_samples=512"])
    res = train(cfg, run, progress=False)
    if res.interrupted:
        raise SystemExit("benchmark interrupted")
    return res.best_fd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--quality-steps", type=int, default=300, help="same-budget bf16 vs fp32 comparison at 32 px (0 = skip)")
    a = ap.parse_args()
    from cxrgan.data import Preprocess, SourceOptions, prepare
    from cxrgan.runtime.execution import pick_device

    work = Path(tempfile.mkdtemp(prefix="cxrgan-bench-train-"))
    try:
        data = prepare("phantom", work / "data", Preprocess(size=a.size), SourceOptions(count=1000), progress=False)
        images = torch.from_numpy(np.array(data.images)).unsqueeze(1).float() / 127.5 - 1
        device = pick_device("auto")
        print(f"training benchmark: DCGAN {a.size} px, batch {a.batch}, device {device}, "
              f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
        ref = reference_loop(images, a.batch, a.iters, device)
        gflop = reference_flops(a.size, a.batch) / 1e9
        print(f"{'variant':<44}{'img/s':>8}{'vs ref':>8}{'GFLOP/s':>9}")
        print(f"{'reference eager loop (fp32, contiguous)':<44}{ref:>8.1f}{1.0:>8.2f}{ref * gflop:>9.0f}")
        results = {}
        from cxrgan.runtime.execution import native_bf16 as has_native_bf16

        native_bf16 = has_native_bf16(device)
        print(f"native bf16 on {device.type}: {'yes' if native_bf16 else 'no (emulated)'}")
        for precision in ("fp32", "bf16"):
            for cl in (False, True):
                if precision == "bf16" and not native_bf16 and not cl:
                    continue  # emulated bf16 is very slow: time only the channels-last variant, briefly
                iters = a.iters if precision == "fp32" or native_bf16 else 4
                speed = loop_speed(data.root, work, "dcgan", a.batch, iters, precision, str(device), cl)
                results[(precision, cl)] = speed
                label = f"cxrgan loop ({precision}, {'channels-last' if cl else 'contiguous'})"
                print(f"{label:<44}{speed:>8.1f}{speed / ref:>8.2f}{speed * gflop:>9.0f}")
        print(f"work per image per iteration: {gflop:.2f} GFLOP (measured with FlopCounterMode)")
        best = max(results, key=results.get)
        print(f"fastest cxrgan variant: {best[0]}, {'channels-last' if best[1] else 'contiguous'}: "
              f"{results[best] / ref:.2f}x the reference (target >= 1.5x)")
        if ("bf16", False) not in results:
            print("(bf16 contiguous not timed: no native bf16 on this CPU)")
        if device.type == "cuda":
            peak = matmul_tflops(device)
            achieved = results[("bf16", True)] * gflop / 1e3
            print(f"GPU: measured bf16 matmul {peak:.0f} TFLOP/s; training reaches {achieved:.1f} TFLOP/s = "
                  f"{100 * achieved / peak:.1f}% of it")
        slowdown = results[("fp32", True)] / results[("bf16", True)]
        if a.quality_steps and slowdown > 2:
            print(f"bf16 autocast is {slowdown:.1f}x slower than fp32 on this device (no native bf16 matrix units); "
                  f"precision=auto uses {'bf16' if native_bf16 else 'fp32'} here. The same-budget quality comparison is skipped.")
        elif a.quality_steps:
            q = prepare("phantom", work / "q32", Preprocess(size=32), SourceOptions(count=1000), progress=False)
            fds = {}
            for precision in ("fp32", "bf16"):
                t = time.perf_counter()
                fd = best_fd_after(q.root, work, a.quality_steps, precision, str(device))
                fds[precision] = (fd, time.perf_counter() - t)
            shown = {k: "no eligible checkpoint" if fd is None else f"{fd:.3f}" for k, (fd, _) in fds.items()}
            print(f"quality at equal budget ({a.quality_steps} steps, 32 px, best FD in fixed features, lower is better): "
                  f"fp32 {shown['fp32']} ({fds['fp32'][1]:.0f} s), bf16 {shown['bf16']} ({fds['bf16'][1]:.0f} s)")
            if None in (fds["fp32"][0], fds["bf16"][0]):
                print("a run kept no checkpoint with enough diversity to be chosen; raise --quality-steps to compare")
                return
            no_loss = fds["bf16"][0] <= fds["fp32"][0] * 1.1
            faster = results[("bf16", True)] > results[("fp32", True)]
            print(f"one seed: bf16 {'shows no quality loss' if no_loss else 'scores worse'} and is "
                  f"{'faster' if faster else 'not faster'} here. One seed of a GAN cannot settle quality: "
                  "benchmarks/bf16_quality.py compares several. precision=auto uses "
                  f"{'bf16' if native_bf16 else 'fp32'} on this device (bf16 where it is native).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
