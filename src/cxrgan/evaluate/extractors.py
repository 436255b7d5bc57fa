"""Feature spaces for evaluation, stored and versioned like models.

A feature space maps images ``(N, 1, S, S)`` float in [-1, 1] to ``(N, D)`` float64 features. Kinds:

- ``randconv-v1``: the fixed, seeded random convolutional network (no training; texture statistics).
- ``autoencoder``: Salehinejad et al.'s convolutional autoencoder trained on the real training split; its latent is
  the space of the centroid study.
- ``classifier``: the small CNN trained on the real training split (label-aware): the global means of every
  stage, fine to coarse (the penultimate layer alone saturates on noise; see ``SmallCNN.multiscale_features``).
- ``inception:PATH``: a local TorchScript Inception (the FID convention: ``model(x, return_features=True)``
  on 299 px RGB in [0, 255], 2048 features), where a user has the file; nothing is downloaded.

A trained extractor lives in a directory ``FEATS/<kind>/`` with ``weights.safetensors`` and ``extractor.json``
(kind, architecture, image size, class names, the training data's manifest hash, validation figures). Its
identity is ``<kind>-<first 12 hex digits of the weights' SHA-256>``; every figure names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.dataset import PreparedDataset
from ..errors import CxrganError
from ..nets.evaluators import ConvAutoencoder, build_classifier
from ..runtime.execution import pick_device
from ..utils.io import atomic_directory, sha256_file, write_json_atomic
from ..utils.tensors import batches, to_model_range
from .classifier import ClassifierConfig, evaluate_classifier, random_affine, train_classifier
from .features import FEATURES_VERSION, RandomConvFeatures

FORMAT = "cxrgan-extractor"
TRAINED_KINDS = ("autoencoder", "classifier")


class FeatureSpace:
    """A named feature space: ``embed`` maps images in [-1, 1] to float64 features, batched."""

    kind: str = ""
    ident: str = ""

    def __init__(self, net: nn.Module, kind: str, ident: str, info: dict[str, Any] | None = None) -> None:
        self.net, self.kind, self.ident, self.info = net.eval(), kind, ident, info or {}
        self.net.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> "FeatureSpace":
        self.net.to(device)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("multiscale_features", "features"):
            if hasattr(self.net, name):
                return getattr(self.net, name)(x)
        return self.net(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 64) -> np.ndarray:
        """Features ``(N, D)`` float64 of images ``x`` ``(N, 1, S, S)`` float in [-1, 1]. Batches of 64: the
        full-resolution activations of a batch set a training run's peak memory (256 added about 250 MB at 64 px)."""
        dev = self.device
        out = [self._forward(x[i : i + batch].to(dev).float()).double().cpu().numpy() for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, 0))

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch: int = 64) -> np.ndarray | None:
        """Predicted class indices (of ``info["class_names"]``) of images ``x`` in [-1, 1] where this space is a
        trained classifier; ``None`` for spaces without a class head."""
        if self.kind != "classifier":
            return None
        dev = self.device
        out = [self.net(x[i : i + batch].to(dev).float()).argmax(1).cpu().numpy() for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    @torch.no_grad()
    def classify_u8(self, images: np.ndarray, batch: int = 64) -> np.ndarray | None:
        """:meth:`classify` of uint8 images ``(N, S, S)`` (memory-mapped arrays are read batch by batch)."""
        if self.kind != "classifier":
            return None
        out = [self.classify(x, batch) for x in batches(images, batch, self.device)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    @torch.no_grad()
    def embed_u8(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """Features of uint8 images ``(N, S, S)`` (memory-mapped arrays are read batch by batch)."""
        out = [self._forward(x.float()).double().cpu().numpy() for x in batches(images, batch, self.device)]
        return np.concatenate(out)


class _RandConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = RandomConvFeatures()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def randconv_space() -> FeatureSpace:
    """The fixed random convolutional space ``randconv-v1``."""
    return FeatureSpace(_RandConvNet(), "randconv", FEATURES_VERSION, {"kind": "randconv", "version": FEATURES_VERSION})


class _TorchScriptInception(nn.Module):
    """A TorchScript Inception in the FID convention, fed 299 px RGB in [0, 255]."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.model = torch.jit.load(str(path), map_location="cpu").eval()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def features(self, x: torch.Tensor) -> torch.Tensor:
        rgb = ((x.clamp(-1, 1) + 1) * 127.5).expand(-1, 3, -1, -1)
        rgb = nn.functional.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False)
        try:
            return self.model(rgb, return_features=True)
        except (RuntimeError, TypeError):
            return self.model(rgb)


def inception_space(path: str | Path) -> FeatureSpace:
    """A local TorchScript Inception file (for example NVIDIA's ``inception-2015-12-05.pt``)."""
    p = Path(path)
    if not p.is_file():
        raise CxrganError(f"--features inception:{p}: no such file. Give the path of a local TorchScript Inception "
                          "(e.g. inception-2015-12-05.pt); cxrgan downloads nothing. Without one, use the trained spaces "
                          "(--features autoencoder,classifier)")
    try:
        net = _TorchScriptInception(p)
    except (RuntimeError, ValueError) as exc:
        raise CxrganError(f"--features inception:{p}: not a TorchScript file torch can load ({str(exc).splitlines()[0]})") from None
    return FeatureSpace(net, "inception", f"inception-{sha256_file(p)[:12]}", {"kind": "inception", "path": str(p)})


# ------------------------------------------------------------------------------ trained extractors
@dataclass
class ExtractorTraining:
    """Budgets for the trained feature spaces (defaults: about a minute each for 3,600 images at 64 px)."""

    ae_epochs: int = 10
    ae_width: int = 32
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    seed: int = 0
    device: str = "auto"


def train_autoencoder(train_u8: np.ndarray, val_u8: np.ndarray, size: int, epochs: int = 10, width: int = 32,
                      seed: int = 0, device: str = "auto", batch_size: int = 64) -> tuple[ConvAutoencoder, dict[str, float]]:
    """Train Salehinejad et al.'s convolutional autoencoder (MSE, light augmentation) on uint8 images ``(N, S, S)``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = pick_device(device)
    ae = ConvAutoencoder(size, width).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    steps = epochs * max(1, -(-len(train_u8) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.2)
    data = torch.from_numpy(np.ascontiguousarray(train_u8))
    for _ in range(epochs):
        ae.train()
        perm = torch.randperm(len(data), generator=gen)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            x = random_affine(to_model_range(data[idx]).to(dev), gen, degrees=3, jitter=0.05)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = nn.functional.mse_loss(ae(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    ae.eval()
    with torch.no_grad():
        errs = [float(nn.functional.mse_loss(ae(x), x)) * len(x) for x in batches(val_u8, 256, dev)]
    return ae, {"val_mse": sum(errs) / max(1, len(val_u8))}


def _save(net: nn.Module, out: Path, info: dict[str, Any]) -> FeatureSpace:
    from safetensors.torch import save_file

    with atomic_directory(out, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp / "weights.safetensors"))
        ident = f"{info['kind']}-{sha256_file(tmp / 'weights.safetensors')[:12]}"
        write_json_atomic(tmp / "extractor.json", {"format": FORMAT, "ident": ident, **info})
    return FeatureSpace(net.cpu(), info["kind"], ident, info)


def train_extractors(ds: PreparedDataset, out: str | Path, kinds: Sequence[str] = TRAINED_KINDS,
                     training: ExtractorTraining | None = None, progress: bool = True) -> dict[str, FeatureSpace]:
    """Train the feature spaces ``kinds`` on ``ds``'s real training split into ``out/<kind>/``."""
    training = training or ExtractorTraining()
    out = Path(out)
    bad = set(kinds) - set(TRAINED_KINDS)
    if bad:
        raise CxrganError(f"unknown feature extractor kind {sorted(bad)[0]!r}; trainable kinds: {', '.join(TRAINED_KINDS)}")
    if ds.multilabel:
        raise CxrganError(f"{ds.root} is multi-label; the trained feature spaces need single-label data (prepare without --multilabel)")
    tr, va = ds.indices("train"), ds.indices("val")
    if len(tr) < 8 or len(va) < 2:
        raise CxrganError(f"{ds.root}: the feature spaces need a training split (has {len(tr)}) and a validation split (has {len(va)})")
    x_tr, x_va = np.asarray(ds.images[tr]), np.asarray(ds.images[va])
    y_tr, y_va = np.asarray(ds.labels)[tr], np.asarray(ds.labels)[va]
    base = {"image_size": ds.size, "class_names": ds.class_names, "data_path": str(ds.root.resolve()),
            "data_manifest_sha256": ds.manifest_hash, "seed": training.seed, "train_images": int(len(tr))}
    spaces = {}
    for kind in kinds:
        if progress:
            print(f"training the {kind} feature space on {len(tr)} real images of {ds.root} ...", flush=True)
        if kind == "autoencoder":
            net, figures = train_autoencoder(x_tr, x_va, ds.size, training.ae_epochs, training.ae_width, training.seed, training.device)
            info = {**base, "kind": kind, "arch": {"width": training.ae_width}, "epochs": training.ae_epochs, "validation": figures}
        else:
            clf = train_classifier(x_tr, y_tr, x_va, y_va, ds.class_names, training.classifier, training.seed, progress)
            net = clf.model
            figures = {k: v for k, v in evaluate_classifier(clf, x_va, y_va).items() if isinstance(v, float)}
            info = {**base, "kind": kind, "arch": {"arch": training.classifier.arch, "width": training.classifier.width},
                    "classifier": asdict(training.classifier), "threshold": clf.threshold, "validation": figures}
        spaces[kind] = _save(net, out / kind, info)
    return spaces


def load_extractor(path: str | Path) -> FeatureSpace:
    """Load a trained feature space directory (``FEATS/<kind>/``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    try:
        info = json.loads((p / "extractor.json").read_text())
    except (OSError, ValueError):
        raise CxrganError(f"{p} is not a cxrgan feature extractor (no readable extractor.json); train one with "
                          "`cxrgan features train --data DATASET --out FEATS`") from None
    if info.get("format") != FORMAT:
        raise CxrganError(f"{p}/extractor.json is not a cxrgan feature extractor")
    if info["kind"] == "autoencoder":
        net: nn.Module = ConvAutoencoder(int(info["image_size"]), int(info["arch"]["width"]))
    else:
        net = build_classifier(info["arch"]["arch"], len(info["class_names"]), int(info["arch"]["width"]))
    try:
        net.load_state_dict(load_file(str(p / "weights.safetensors")))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CxrganError(f"{p}/weights.safetensors is missing or damaged ({type(exc).__name__}); train the extractor again") from None
    return FeatureSpace(net, info["kind"], info["ident"], info)


def cache_root() -> Path:
    """Where automatically trained extractors are kept: ``$CXRGAN_CACHE`` or ``~/.cache/cxrgan``."""
    return Path(os.environ.get("CXRGAN_CACHE") or Path.home() / ".cache" / "cxrgan")


def cached_dir(ds: PreparedDataset) -> Path:
    return cache_root() / "features" / ds.manifest_hash[:16]


def cached_extractor(ds: PreparedDataset, kind: str) -> FeatureSpace | None:
    """The cached trained extractor of ``kind`` for exactly this dataset, if one was trained."""
    d = cached_dir(ds) / kind
    return load_extractor(d) if (d / "extractor.json").is_file() else None


def ensure_extractors(ds: PreparedDataset, kinds: Sequence[str] = TRAINED_KINDS, training: ExtractorTraining | None = None,
                      progress: bool = True) -> dict[str, FeatureSpace]:
    """The trained extractors for ``ds``, from the cache or trained now (and cached)."""
    have = {k: s for k in kinds if (s := cached_extractor(ds, k)) is not None}
    missing = [k for k in kinds if k not in have]
    if missing:
        have.update(train_extractors(ds, cached_dir(ds), missing, training, progress))
    return {k: have[k] for k in kinds}


def resolve_spaces(spec: str, ds: PreparedDataset | None, progress: bool = True) -> list[FeatureSpace]:
    """Feature spaces from a comma-separated spec: ``autoencoder``, ``classifier``, ``randconv``,
    ``inception:PATH`` or a trained extractor directory. Trained kinds are taken from the cache for ``ds``
    (or trained and cached)."""
    out: list[FeatureSpace] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item in ("randconv", FEATURES_VERSION):
            out.append(randconv_space())
        elif item.startswith("inception:"):
            out.append(inception_space(item.split(":", 1)[1]))
        elif item in TRAINED_KINDS:
            if ds is None:
                raise CxrganError(f"--features {item}: needs the real dataset (--real) to find or train the extractor")
            out.extend(ensure_extractors(ds, [item], progress=progress).values())
        elif Path(item).is_dir():
            out.append(load_extractor(item))
        else:
            raise CxrganError(f"--features {item!r}: use autoencoder, classifier, randconv, inception:PATH or an extractor directory")
    if not out:
        raise CxrganError("--features is empty; use e.g. autoencoder,classifier")
    return out
