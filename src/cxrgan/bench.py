"""``cxrgan bench``: how fast every family trains on this machine, against a reference measured in the same run.

The reference is the textbook DCGAN training loop written out here (Radford et al.'s architecture, fp32,
contiguous tensors, data in memory, plain Adam and BCE), so a figure reads as "x times a plain PyTorch loop on
this very machine", whatever the machine. Each family is then timed through cxrgan's real training loop with
its defaults (precision ``auto``: bf16 where the CPU or GPU computes it natively) and in plain fp32, at the
same image size and batch. The work of one training step is counted with PyTorch's FLOP counter, which gives
GFLOP/s, and on a GPU the fraction of its measured bf16 matrix throughput that training reaches. The CPU's
capability (the SIMD level PyTorch dispatches to, and whether bf16 is native) is printed with the figures.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import CxrganError


def reference_models(size: int, nz: int = 100, ngf: int = 64, ndf: int = 64) -> tuple[nn.Module, nn.Module]:
    """Radford et al.'s DCGAN for ``size`` px grayscale, as in the classic PyTorch example."""
    k = int(np.log2(size)) - 3  # upsampling stages after 4x4 (excluding the last)
    g: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * 2**k, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2**k), nn.ReLU(True)]
    for i in range(k, 0, -1):
        g += [nn.ConvTranspose2d(ngf * 2**i, ngf * 2 ** (i - 1), 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2 ** (i - 1)), nn.ReLU(True)]
    g += [nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh()]
    d: list[nn.Module] = [nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for i in range(k):
        d += [nn.Conv2d(ndf * 2**i, ndf * 2 ** (i + 1), 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2 ** (i + 1)), nn.LeakyReLU(0.2, True)]
    d += [nn.Conv2d(ndf * 2**k, 1, 4, 1, 0, bias=False)]
    return nn.Sequential(*g), nn.Sequential(*d)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_loop(images: torch.Tensor, batch: int, iters: int, device: torch.device, warmup: int = 3) -> float:
    """Images/s of the plain eager fp32 DCGAN loop (one D and one G update per iteration)."""
    torch.manual_seed(0)
    G, D = reference_models(images.shape[-1])
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    data = images.to(device)
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
    t0 = 0.0
    for it in range(warmup + iters):
        if it == warmup:
            sync(device)
            t0 = time.perf_counter()
        real = data[torch.randint(0, len(data), (batch,), device=device)]
        fake = G(torch.randn(batch, 100, 1, 1, device=device))
        opt_d.zero_grad()
        (bce(D(real).flatten(), ones) + bce(D(fake.detach()).flatten(), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        bce(D(fake).flatten(), ones).backward()
        opt_g.step()
    sync(device)
    return iters * batch / (time.perf_counter() - t0)


def reference_flops(size: int, batch: int) -> float:
    """FLOPs per image of one reference iteration (forward and backward of D twice and G)."""
    from torch.utils.flop_counter import FlopCounterMode

    G, D = reference_models(size)
    real = torch.randn(batch, 1, size, size)
    with FlopCounterMode(display=False) as fc:
        fake = G(torch.randn(batch, 100, 1, 1))
        (D(real).mean() + D(fake.detach()).mean()).backward()
        D(fake).mean().backward()
    return fc.get_total_flops() / batch


def _bound_family(family: str, data: Path, overrides: Sequence[str] = ()):
    """``family`` at its defaults (plus ``overrides``) built for ``data`` and bound to its training images, as a run
    would build it: ``(config, training data, family)``."""
    from .data import PreparedDataset
    from .models.registry import build_family, get_family
    from .train.config import load_config
    from .train.data import TrainData

    cfg = load_config(None, [f"model.family={family}", f"data.path={data}", *overrides])
    ds = PreparedDataset.open(data)
    td = TrainData(ds, "train", cfg.data.classes or get_family(family).training_classes(cfg.model))
    fam = build_family(cfg, ds.size, td.num_classes)
    fam.bind_data(td)
    return cfg, td, fam


def family_flops(family: str, data: Path, batch: int = 8, overrides: Sequence[str] = ()) -> float:
    """FLOPs per image of one training step of ``family`` (every phase's loss and backward), on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    from .train.augment import DiffAugment
    from .train.data import EpochSampler

    cfg, td, fam = _bound_family(family, data, overrides)
    augment = DiffAugment(cfg.augment.policy, cfg.augment.translation, cfg.augment.cutout)
    rows = EpochSampler(len(td), batch, 0).next()
    with FlopCounterMode(display=False) as fc:
        for phase in fam.phases:
            fam.zero_grad(set_to_none=True)
            loss, _ = fam.phase_loss(phase, td.batch(rows, torch.device("cpu"), False), augment)
            loss.backward()
    return fc.get_total_flops() / len(rows)


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192, reps: int = 20) -> float:
    """Measured dense matrix-multiply throughput of ``device`` in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def loop_speed(data: Path, work: Path, family: str, batch: int, iters: int, precision: str, device: str,
               channels_last: bool = True, compile: bool = False, overrides: Sequence[str] = ()) -> float:
    """Median images/s of cxrgan's real training loop over logged windows after two warm-up windows."""
    from .train.config import load_config
    from .train.loop import train
    from .train.metrics import read_metrics

    log_every = 2 if iters < 10 else 5
    steps = iters + 2 * log_every
    run = work / f"{family}-{precision}-{int(channels_last)}-{int(compile)}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_config(None, [f"model.family={family}", f"data.path={data}", f"batch_size={batch}", f"steps={steps}",
                             f"precision={precision}", f"channels_last={channels_last}", f"device={device}", f"compile={compile}",
                             f"log_every={log_every}", f"ckpt_every={10**9}", f"grid_every={10**9}", "eval_samples=32",
                             *overrides])
    quiet = logging.getLogger("cxrgan")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the table is the output, not the training log
    try:
        res = train(cfg, run, progress=False)
    finally:
        quiet.setLevel(level)
    if res.interrupted:
        raise CxrganError("benchmark interrupted")
    speeds = [float(r["img_per_s"]) for r in read_metrics(run / "metrics.csv") if r.get("img_per_s")]
    return float(np.median(speeds[2:] or speeds[-1:]))


@dataclass
class StepProfile:
    """What one training step of a family asks of the device (:func:`profile_steps`): operators dispatched (kernel
    launches on a GPU) and host reads of tensor values (each one a wait for the GPU), per plain step and per logging
    step, with the places the plain steps' reads came from."""

    family: str
    batch: int
    ops_per_step: float
    views_per_step: float
    reads_per_step: float
    reads_per_log_step: float
    read_sites: dict[str, float]
    top_ops: dict[str, float]


def profile_steps(family: str, data: Path, work: Path, batch: int = 64, steps: int = 14, device: str = "auto",
                  precision: str = "auto", overrides: Sequence[str] = ()) -> StepProfile:
    """Train ``family`` at its defaults for ``steps`` steps (logging every 4th, no checkpoint before the last) with
    :class:`~cxrgan.runtime.syncs.HostReads` and :class:`~cxrgan.runtime.syncs.OpCount` active, and average per
    step over steps 3 to ``steps - 1`` (the first build caches; the last evaluates and saves)."""
    from .runtime.syncs import HostReads, OpCount
    from .train.config import load_config
    from .train.loop import train

    log_every = 4
    run = work / f"profile-{family}-{batch}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = load_config(None, [f"model.family={family}", f"data.path={data}", f"batch_size={batch}", f"steps={steps}",
                             f"precision={precision}", f"device={device}", f"log_every={log_every}", f"ckpt_every={10**9}",
                             f"grid_every={10**9}", "eval_samples=32", *overrides])
    reads, ops = HostReads(), OpCount()
    marks: list[tuple[int, int, Counter, int]] = []

    def mark(step: int, stats: dict) -> None:
        marks.append((step, len(reads.reads), ops.ops.copy(), sum(ops.views.values())))

    quiet = logging.getLogger("cxrgan")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with reads, ops:
            train(cfg, run, progress=False, on_step=mark)
    finally:
        quiet.setLevel(level)
    plain, logged, sites, op_counts, views = [], [], Counter(), Counter(), 0
    for (_, r0, o0, v0), (step, r1, o1, v1) in zip(marks, marks[1:]):
        if step < 3 or step == steps:
            continue
        if step % log_every == 0:
            logged.append(r1 - r0)
            continue
        plain.append(r1 - r0)
        sites.update(f"{name} at {site}" for name, site in reads.reads[r0:r1])
        op_counts.update(o1 - o0)
        views += v1 - v0
    n = max(len(plain), 1)
    return StepProfile(family, batch, sum(op_counts.values()) / n, views / n, float(np.mean(plain)) if plain else float("nan"),
                       float(np.mean(logged)) if logged else float("nan"), {k: v / n for k, v in sites.most_common()},
                       {k: v / n for k, v in op_counts.most_common(8)})


def reference_sampling(size: int, n: int, batch: int, device: torch.device) -> float:
    """Images/s of the reference DCGAN's generator drawing ``n`` images in eval mode, fp32."""
    torch.manual_seed(0)
    G = reference_models(size)[0].to(device).eval()
    z = torch.randn(n, 100, 1, 1, device=device)
    with torch.no_grad():
        G(z[:batch])
        sync(device)
        t = time.perf_counter()
        for i in range(0, n, batch):
            G(z[i : i + batch])
        sync(device)
    return n / (time.perf_counter() - t)


def sampling_speed(family: str, data: Path, n: int, batch: int, device: str, overrides: Sequence[str] = ()) -> float:
    """Images/s of a freshly built family drawing ``n`` images from noise in eval mode at its default precision and
    sampler (``ddpm``: its DDIM steps and guidance): what ``cxrgan sample`` spends per image, training aside."""
    from .runtime.execution import autocast, autocast_dtype, pick_device

    dev = pick_device(device)
    cfg, td, fam = _bound_family(family, data, overrides)
    fam.to(dev).eval()
    if cfg.channels_last and dev.type != "mps":  # as cxrgan sample loads a run
        fam.to(memory_format=torch.channels_last)
    size = td.dataset.size
    amp = autocast_dtype(cfg.precision, dev, pixels=batch * size * size)
    g = torch.Generator().manual_seed(0)
    z = fam.sample_z(n, generator=g).to(dev)
    y = torch.randint(0, td.num_classes, (n,), generator=g).to(dev)
    with torch.no_grad(), autocast(dev, amp):
        fam.generate(z[:batch], y[:batch])
        sync(dev)
        t = time.perf_counter()
        for i in range(0, n, batch):
            fam.generate(z[i : i + batch], y[i : i + batch])
        sync(dev)
    return n / (time.perf_counter() - t)


def _sampling_table(families: Sequence[str], data: Path, size: int, batch: int, dev: torch.device,
                    say: Callable[[str], None]) -> None:
    """Print the images/s of drawing ``2 x batch`` images with each family that draws from noise, against the
    reference generator drawing the same number in the same run."""
    from .models.registry import get_family

    drawing = [f for f in families if not get_family(f).translates]
    if not drawing:
        return
    n = 2 * batch
    ref = reference_sampling(size, n, batch, dev)
    say(f"sampling {n} images, batch {batch}: reference DCGAN generator (fp32) {ref:.0f} img/s")
    for fam in drawing:
        speed = sampling_speed(fam, data, n, batch, str(dev))
        say(f"  {fam}: {speed:.1f} img/s, {speed / ref:.3g}x the reference; 1,000 images in {1000 / speed:.1f} s")


@dataclass
class BenchRow:
    variant: str
    img_per_s: float
    vs_reference: float
    gflop_per_s: float
    note: str = ""


def machine_line(device: torch.device) -> str:
    """The machine as the figures depend on it: device, threads, SIMD capability, native bf16."""
    from .runtime.execution import native_bf16

    cpu = torch.backends.cpu.get_cpu_capability()
    bf16 = "native" if native_bf16(device) else "emulated (slow)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"device {device} ({name}), {torch.get_num_threads()} CPU threads, CPU capability {cpu}, bf16 {bf16}, "
            f"torch {torch.__version__}")


FAMILIES = ("gan", "dcgan", "cgan", "bigan", "semicond", "dgm", "ddpm")


def run_bench(families: Sequence[str] = FAMILIES, size: int = 64, batch: int = 64, iters: int = 20, device: str = "auto",
              compile: bool = False, data: str | Path | None = None, say: Callable[[str], None] = print) -> list[BenchRow]:
    """Time the reference and every family (default precision and fp32); print a table; return its rows."""
    from .data import PreparedDataset, Preprocess, SourceOptions, prepare
    from .models.registry import family_names
    from .runtime.execution import autocast_dtype, native_bf16, pick_device

    unknown = [f for f in families if f not in family_names()]
    if unknown:
        raise CxrganError(f"unknown family {unknown[0]!r}; choose from {', '.join(family_names())}")
    dev = pick_device(device)
    work = Path(tempfile.mkdtemp(prefix="cxrgan-bench-"))
    try:
        if data is None:
            ds = prepare("phantom", work / "data", Preprocess(size=size), SourceOptions(count=max(512, 2 * batch)), progress=False)
        else:
            ds = PreparedDataset.open(data)
            size = ds.size
        say(f"cxrgan bench: {size} px, batch {batch}, {iters} timed steps per variant")
        say(machine_line(dev))
        images = torch.from_numpy(np.array(ds.images[: min(len(ds), 2048)])).unsqueeze(1).float() / 127.5 - 1
        ref = reference_loop(images, batch, iters, dev)
        ref_flops = reference_flops(size, min(batch, 16))
        auto = "bf16" if autocast_dtype("auto", dev, pixels=batch * size * size) is not None else "fp32"
        rows = [BenchRow("reference: plain eager DCGAN loop, fp32", ref, 1.0, ref * ref_flops / 1e9)]
        variants = [("auto", f"default ({auto}, channels-last)", True, False)]
        if compile:
            variants.append(("auto", f"default, compiled ({auto}, channels-last)", True, True))
        if auto != "fp32":
            variants.append(("fp32", "fp32, channels-last", True, False))
        elif native_bf16(dev):  # the default chose fp32 for this batch: show what bf16 would have given
            variants.append(("bf16", "bf16 (not the default at this batch), channels-last", True, False))
        for fam in families:
            flops = family_flops(fam, ds.root)
            for precision, label, cl, comp in variants:
                speed = loop_speed(ds.root, work, fam, batch, iters, precision, str(dev), cl, comp)
                rows.append(BenchRow(f"{fam}: {label}", speed, speed / ref, speed * flops / 1e9))
        width = max(len(r.variant) for r in rows) + 2
        say(f"{'variant':<{width}}{'img/s':>9}{'vs ref':>8}{'GFLOP/s':>9}")
        for r in rows:
            say(f"{r.variant:<{width}}{r.img_per_s:>9.1f}{r.vs_reference:>8.2f}{r.gflop_per_s:>9.0f}")
        say("vs ref: images/s over the reference's, measured in this run on this machine (for dcgan the same "
            "architecture; other families do different work per image, see GFLOP/s)")
        _sampling_table(families, ds.root, size, batch, dev, say)
        if dev.type == "cuda":
            peak = matmul_tflops(dev)
            say(f"GPU: measured bf16 matrix multiply {peak:.0f} TFLOP/s; training reaches " + ", ".join(
                f"{r.variant.split(':')[0]} {100 * r.gflop_per_s / 1e3 / peak:.1f}%" for r in rows[1:] if "default (" in r.variant))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
