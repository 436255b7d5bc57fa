"""``sample``: trained runs -> a labelled synthetic set.

The output is itself a prepared dataset (``images.npy``, ``labels.npy``, ``splits.npy`` all train,
``manifest.json``), so the evaluation and augmentation studies read synthetic and real data the same way,
plus ``png/CLASS/NNNNNN.png`` files. Several per-class runs (``train --classes PNEUMONIA``) combine into one
labelled set. Output is deterministic for a seed: all latents are drawn up front and generators run in
eval mode, so an image does not depend on the batch it was generated in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data.dataset import DatasetWriter, PreparedDataset, base_manifest
from .errors import CxrganError
from .models.base import Family
from .models.registry import build_family
from .runtime.execution import pick_device
from .train import checkpoint as ckpt
from .train.config import TrainConfig
from .train.data import TrainData
from .train.quality import QualityMonitor, quality_space
from .train.rundir import read_run
from .utils.images import labelled_rows, save_png, to_uint8
from .utils.io import atomic_directory, atomic_path, write_text_atomic
from .utils.progress import progress_bar

log = logging.getLogger("cxrgan.sample")

@dataclass
class LoadedRun:
    """A trained generator ready to sample: family, the weights to use (EMA when present), its classes."""

    path: Path
    cfg: TrainConfig
    info: dict
    family: Family
    checkpoint: Path
    step: int

    @property
    def trained_classes(self) -> list[str]:
        return list(self.cfg.data.classes) or list(self.info["class_names"])


def load_run(run: str | Path, which: str | int = "best", device: torch.device | str = "cpu") -> LoadedRun:
    """Load a run's generator (and encoder) from checkpoint ``which`` (``best``, ``last`` or a step)."""
    run = Path(run)
    cfg, info = read_run(run)
    family = build_family(cfg, int(info["image_size"]), len(info["class_names"]))
    path = ckpt.resolve(run, which)
    tensors, _, meta = ckpt.load_checkpoint(path, cfg.model.family, with_state=False)
    modules = family.networks()
    ckpt.load_modules(modules, tensors)
    ema_names = [n for n in family.ema_modules if any(k.startswith(f"ema.{n}.") for k in tensors)]
    if ema_names:  # sample from the weight average when the run kept one
        ckpt.load_modules({n: modules[n] for n in ema_names}, tensors, prefix="ema.")
    family.to(device).eval()
    if cfg.channels_last and torch.device(device).type != "mps":  # sample in the memory format the run trained in
        family.to(memory_format=torch.channels_last)
    return LoadedRun(run, cfg, info, family, path, int(meta["step"]))



def run_monitor(loaded: LoadedRun, device: torch.device | str = "cpu") -> tuple[TrainData, QualityMonitor]:
    """The training data and quality monitor of a finished run, as its loop built them (same data, feature space,
    latents, real images and seed) and as the code builds them today: for scoring its checkpoints again."""
    ds = PreparedDataset.open(loaded.info["data_path"])
    data = TrainData(ds, loaded.cfg.data.split, list(loaded.cfg.data.classes) or None)
    space = quality_space(loaded.cfg.quality_features, ds, loaded.info.get("quality_space"))
    return data, QualityMonitor(data, loaded.cfg.eval_samples, loaded.family.sample_z, loaded.cfg.seed, torch.device(device),
                                space, loaded.family.conditional, real_view=loaded.family.real_view)

def require_sampler(loaded: LoadedRun) -> LoadedRun:
    """Refuse runs whose generator translates images (dgm) where images are to be drawn from noise."""
    if loaded.family.translates:
        raise CxrganError(f"run {loaded.path} is a {loaded.cfg.model.family} run: it turns input radiographs into normal ones "
                          "and draws nothing from noise; use `cxrgan decompose` or `cxrgan anomaly` with it")
    return loaded


def truncated_normal(n: int, dim: int, psi: float | None, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """``(n, dim)`` N(0, 1) latents; with ``psi``, values outside [-psi, psi] are redrawn (truncation trick); then
    multiplied by ``temperature`` (above 1 draws from wider than the training prior, below 1 narrower)."""
    if not temperature > 0:
        raise CxrganError(f"--temperature must be positive, got {temperature}")
    z = torch.randn(n, dim, generator=generator)
    if psi is not None:
        if psi <= 0:
            raise CxrganError(f"--truncation must be positive, got {psi}")
        bad = z.abs() > psi
        while bad.any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
            bad = z.abs() > psi
    return z * temperature if temperature != 1.0 else z


@torch.no_grad()
def generate(loaded: LoadedRun, z: torch.Tensor, y: torch.Tensor, batch: int = 256) -> np.ndarray:
    """uint8 images ``(N, S, S)`` for latents ``z`` and class indices ``y`` (indices of the run's dataset).

    A diffusion run samples in its training precision (bf16 where native), as its quality monitor did: its network
    runs once per step, and bf16 halves the time. A GAN's single pass stays in fp32."""
    from .runtime.execution import autocast, autocast_dtype

    dev = next(loaded.family.parameters()).device
    size = int(loaded.info["image_size"])
    amp = None if loaded.family.adversarial else autocast_dtype(loaded.cfg.precision, dev, pixels=min(batch, len(z)) * size * size)
    out = []
    for i in range(0, len(z), batch):
        with autocast(dev, amp):
            x = loaded.family.generate(z[i : i + batch].to(dev), y[i : i + batch].to(dev))
        out.append(to_uint8(x.float().cpu().numpy()[:, 0]))
    return np.concatenate(out) if out else np.zeros((0, loaded.info["image_size"],) * 2, np.uint8)


def _plan(loaded: LoadedRun, n: int, classes: Sequence[str] | None) -> list[str]:
    """The class of each of the ``n`` images this run contributes."""
    trained = loaded.trained_classes
    if classes:
        lower = {c.lower(): c for c in trained}
        missing = [c for c in classes if c.lower() not in lower]
        if missing:
            raise CxrganError(f"run {loaded.path} cannot generate class {missing[0]!r}; it was trained on: {', '.join(trained)}")
        wanted = [lower[c.lower()] for c in classes]
    else:
        wanted = trained
    if not loaded.family.conditional and len(wanted) > 1:
        if classes:
            raise CxrganError(f"run {loaded.path} is unconditional and trained on {', '.join(trained)} together; "
                              "it cannot generate one class: train per-class runs with --classes, or a cgan")
        return ["UNLABELLED"] * n
    return [wanted[i % len(wanted)] for i in range(n)]


def fixed_codes(loaded: LoadedRun, codes: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """``["exponential=0.2,0.5,1,2,3", ...]`` -> pinned blocks of a semicond run (an error for other families)."""
    if not codes:
        return {}
    space = getattr(loaded.family, "code_space", None)
    if space is None:
        raise CxrganError(f"--code: run {loaded.path} is a {loaded.cfg.model.family} run and has no latent codes; "
                          "codes need a semicond run")
    return dict(space.parse_fixed(text) for text in codes)


def draw_latents(loaded: LoadedRun, n: int, generator: torch.Generator, truncation: float | None = None,
                 fixed: dict[str, torch.Tensor] | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Latents for ``n`` images: noise (truncated and scaled by ``temperature`` when asked), then the family's
    structured part where it has one (:meth:`Family.extend_latents`: a semicond run's code blocks, a self-conditioned
    run's clusters), which ``temperature`` leaves alone."""
    noise = truncated_normal(n, loaded.family.noise_dim, truncation, generator, temperature)
    return loaded.family.extend_latents(noise, generator, fixed)


def draw_seeded_latents(loaded: LoadedRun, seeds: Sequence[int], truncation: float | None = None,
                        fixed: dict[str, torch.Tensor] | None = None, temperature: float = 1.0) -> torch.Tensor:
    """One latent per seed, each drawn by :func:`draw_latents` from a generator seeded with that seed alone: an image
    is then a function of its own seed (and class), whatever set or batch it is drawn in."""
    return torch.cat([draw_latents(loaded, 1, torch.Generator().manual_seed(int(s)), truncation, fixed, temperature) for s in seeds])


def set_sampler(loaded: LoadedRun, steps: int | None, guidance: float | None, eta: float | None = None) -> None:
    """Apply ``--sample-steps``, ``--guidance`` and ``--eta`` to a diffusion run (an error for a GAN run, which has no
    sampler)."""
    if steps is None and guidance is None and eta is None:
        return
    if loaded.family.sampler_settings() is None:
        raise CxrganError(f"--sample-steps, --guidance and --eta choose a diffusion model's sampler; run {loaded.path} is a "
                          f"{loaded.cfg.model.family} run, which draws an image in one pass")
    try:
        loaded.family.set_sampler(steps, guidance, eta)
    except ValueError as exc:
        raise CxrganError(f"run {loaded.path}: {exc}") from None


def _generate_resumable(loaded: LoadedRun, z: torch.Tensor, y: torch.Tensor, cache: Path, tag: str, bar,
                        chunk: int = 256) -> np.ndarray:
    """:func:`generate` a chunk at a time, each chunk kept in ``cache`` as it is finished (``tag``-NNNNN.npy), so an
    interrupted ``sample`` run with the same request goes on from the chunks it has."""
    out = []
    for k, i in enumerate(range(0, len(z), chunk)):
        f = cache / f"{tag}-{k:05d}.npy"
        if f.is_file():
            imgs = np.load(f)
        else:
            imgs = generate(loaded, z[i : i + chunk], y[i : i + chunk], batch=64)  # 64: faster on a CPU than 256
            with atomic_path(f) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, imgs)
        out.append(imgs)
        bar.update(len(imgs))
    return np.concatenate(out)


def _sampling_cache(out: Path, request: dict) -> Path:
    """The folder beside ``out`` that keeps finished chunks of this exact ``request`` (emptied when it differs)."""
    cache = out.with_name(f".{out.name}.sampling")
    key = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    stamp = cache / "request.sha256"
    if cache.is_dir() and (not stamp.is_file() or stamp.read_text().strip() != key):
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        write_text_atomic(stamp, key + "\n")
    else:
        done = len(list(cache.glob("*.npy")))
        if done:
            log.info("resuming: %d chunk(s) of this request were already generated in %s", done, cache)
    return cache


def sample(runs: Sequence[str | Path | LoadedRun], out: str | Path, n: int = 1000, classes: Sequence[str] | None = None,
           truncation: float | None = None, seed: int = 0, checkpoint: str | int = "best", device: str = "auto",
           overwrite: bool = False, png: bool = True, codes: Sequence[str] | None = None, sample_steps: int | None = None,
           guidance: float | None = None, progress: bool = False, eta: float | None = None,
           seed_per_image: bool = False, temperature: float = 1.0) -> PreparedDataset:
    """Generate ``n`` images per run (balanced over ``classes`` or the run's classes) into ``out``.

    Runs that do not carry ``classes`` are skipped when several runs are combined; a single run must carry
    them. ``codes`` pins code blocks of semicond runs (``BLOCK=V[,V...]``); the manifest records every image's
    codes. ``sample_steps``, ``guidance`` and ``eta`` choose a diffusion run's sampler (its configuration's otherwise).
    Images are generated 256 at a time, and finished chunks are kept beside ``out`` until the set is written, so
    an interrupted call with the same arguments goes on where it stopped. The manifest records the seconds per
    image. With ``seed_per_image``, image ``i`` of a run is drawn from seed ``seed + i`` alone
    (:func:`draw_seeded_latents`), so any one image can be drawn again with ``n=1, seed=seed + i``; the manifest
    records each image's seed. ``temperature`` scales the latent noise (:func:`truncated_normal`). ``runs`` may be loaded already (:func:`load_run`; ``checkpoint`` and ``device`` are then
    theirs). Returns the synthetic set opened as a :class:`PreparedDataset`.
    """
    if n < 1:
        raise CxrganError(f"--n must be at least 1, got {n}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise CxrganError(f"output {out} already exists; choose another --out or pass --overwrite")
    dev = pick_device(device)
    loaded = [require_sampler(r if isinstance(r, LoadedRun) else load_run(r, checkpoint, dev)) for r in runs]
    for lr in loaded:
        set_sampler(lr, sample_steps, guidance, eta)
    pinned = [fixed_codes(lr, codes) for lr in loaded]
    sizes = {int(lr.info["image_size"]) for lr in loaded}
    if len(sizes) > 1:
        raise CxrganError(f"runs have different image sizes ({sorted(sizes)}); combine runs of one size")
    size = sizes.pop()
    plans = []
    for lr in loaded:
        wanted = classes
        if classes and len(loaded) > 1:  # combining per-class runs: each contributes the classes it knows
            wanted = [c for c in classes if c.lower() in {t.lower() for t in lr.trained_classes}]
            if not wanted:
                continue
        plans.append((lr, _plan(lr, n, wanted)))
    if not plans:
        raise CxrganError(f"none of the runs was trained on {', '.join(classes or [])}")
    class_names = sorted({c for _, plan in plans for c in plan}, key=lambda c: (c == "UNLABELLED", c))
    if classes:
        class_names = [c for c in class_names if c != "UNLABELLED"]
    total = sum(len(p) for _, p in plans)
    request = {"runs": [(str(lr.checkpoint.resolve()), lr.step, _sampler_record(lr)) for lr, _ in plans], "n": n,
               "classes": list(classes or []), "truncation": truncation, "seed": seed, "codes": list(codes or []),
               "seed_per_image": seed_per_image, **({"temperature": temperature} if temperature != 1.0 else {})}
    cache = _sampling_cache(out, request)
    bar = progress_bar(total, progress, desc="sampling", unit="img")
    t0 = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter(tmp, total, size, with_masks=False)
        labels, items, runs_meta = [], [], []
        for k, (lr, plan) in enumerate(plans):
            if seed_per_image:
                z = draw_seeded_latents(lr, range(seed, seed + len(plan)), truncation, pinned[loaded.index(lr)], temperature)
            else:
                z = draw_latents(lr, len(plan), torch.Generator().manual_seed(seed * 7919 + k), truncation, pinned[loaded.index(lr)],
                                 temperature)
            names = lr.info["class_names"]
            y = torch.tensor([names.index(c) if c in names else 0 for c in plan], dtype=torch.long)
            imgs = _generate_resumable(lr, z, y, cache, f"run{k}", bar)
            space = getattr(lr.family, "code_space", None)
            for i, (img, c) in enumerate(zip(imgs, plan)):
                writer.append(img)
                labels.append(class_names.index(c))
                items.append({"origin": f"{lr.path.name}/{lr.checkpoint.name}/{i}", "sha256": ""})
                if seed_per_image:
                    items[-1]["seed"] = seed + i
                if space is not None:
                    code = z[i, lr.cfg.model.z_dim :]
                    items[-1]["codes"] = {name: [round(float(v), 6) for v in code[sl]] for name, sl in space.slices().items()}
                if png:
                    save_png(img, tmp / "png" / c / f"{len(labels) - 1:06d}.png")
            runs_meta.append({"run": str(lr.path.resolve()), "family": lr.cfg.model.family, "checkpoint": lr.checkpoint.name,
                              "step": lr.step, "count": len(plan), "data_manifest_sha256": lr.info.get("data_manifest_sha256"),
                              "classes": list(lr.info.get("classes") or []), **_sampler_record(lr)})
            if space is not None:
                runs_meta[-1]["codes"] = {"blocks": [b.spec() for b in space.blocks], "correlation": space.correlation,
                                          "fixed": {name: [round(float(x), 6) for x in v] for name, v in pinned[loaded.index(lr)].items()}}
        lab = np.asarray(labels, np.int64)
        splits = np.zeros(len(lab), np.uint8)
        for meta, c in zip(items, lab):
            meta["label"], meta["split"] = int(c), 0
        bar.close()
        seconds = time.perf_counter() - t0
        manifest = base_manifest(
            source={"kind": "synthetic", "path": ",".join(str(r) for r in runs), "runs": runs_meta, "seed": seed,
                    "seed_per_image": seed_per_image, "truncation": truncation, "temperature": temperature, "checkpoint": str(checkpoint), "device": str(dev),
                    "seconds": round(seconds, 3), "seconds_per_image": round(seconds / total, 5)},
            preprocess={"size": size}, class_names=class_names, multilabel=False, size=size, labels=lab, splits=splits,
            skipped=[], split_info={"from_source": True, "by_patient": False}, has_masks=False)
        writer.finalize(lab, splits, manifest, items)
    shutil.rmtree(cache, ignore_errors=True)
    return PreparedDataset.open(out)


def _sampler_record(loaded: LoadedRun) -> dict:
    """A diffusion run's sampler settings as the manifest records them (nothing for a GAN run)."""
    return loaded.family.sampler_settings() or {}


def _code_run(run: str | Path | LoadedRun, checkpoint: str | int) -> LoadedRun:
    loaded = require_sampler(run if isinstance(run, LoadedRun) else load_run(run, checkpoint))
    if getattr(loaded.family, "code_space", None) is None:
        raise CxrganError(f"run {loaded.path} is a {loaded.cfg.model.family} run; traverse needs a semicond run (cxrgan train --model semicond)")
    return loaded


def traverse(run: str | Path | LoadedRun, block: str, out: str | Path, steps: int = 8, dim: int | None = None,
             classes: Sequence[str] | None = None, seed: int = 0, checkpoint: str | int = "best") -> Path:
    """The semi-conditional study's figure: a row per class, columns sweeping code ``block`` (or its dimension ``dim``) over its
    5th-95th percentiles with the noise and the other blocks fixed; written as a labelled PNG at ``out``."""
    if steps < 2:
        raise CxrganError(f"--steps must be at least 2, got {steps}")
    loaded = _code_run(run, checkpoint)
    space = loaded.family.code_space
    b = space.block(block)
    if dim is not None and not 0 <= dim < b.dim:
        raise CxrganError(f"--dim {dim}: block {b.name} has dimensions 0 to {b.dim - 1}")
    rows_classes = _plan(loaded, len(classes or loaded.trained_classes), classes)
    names = loaded.info["class_names"]
    gen = torch.Generator().manual_seed(seed)
    base = draw_latents(loaded, 1, gen)  # one noise vector and one draw of every block, shared by all images
    values = space.quantile_values(b.name, steps)
    sl = space.slices()[b.name]
    start = loaded.cfg.model.z_dim + sl.start
    rows = []
    for c in rows_classes:
        z = base.repeat(steps, 1)
        if dim is None:
            z[:, start : start + b.dim] = values[:, None]
        else:
            z[:, start + dim] = values
        y = torch.full((steps,), names.index(c) if c in names else 0, dtype=torch.long)
        rows.append(generate(loaded, z, y))
    out = Path(out)
    scale = max(1, 64 // int(loaded.info["image_size"]))
    save_png(labelled_rows(rows, [f"{c}" for c in rows_classes], scale=scale), out)
    return out


def code_recovery(run: str | Path, checkpoint: str | int = "best") -> dict[str, float]:
    """Code and class recovery of a semicond run's discriminator on fresh samples (see ``SemiConditional.code_recovery``)."""
    loaded = _code_run(run, checkpoint)
    family = loaded.family
    return family.code_recovery(lambda z, y: family.generate(z, y))
