"""Training configuration as data: a dataclass tree, loadable from YAML, overridable from the command line,
and saved with every run (``RUN/config.yaml``) so any run can be reproduced exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import CxrganError


def _default_codes() -> list[str]:
    from ..models.codes import DEFAULT_CODES

    return list(DEFAULT_CODES)


@dataclass
class ModelConfig:
    """Which family and how wide. ``g_channels`` and ``d_channels``: the base widths of G and D (the channels of
    their largest feature maps, at half the image size; each stage toward 4x4 doubles them, up to 8x); 0 (the
    default) sets them by image size (:func:`default_width`), and a run's ``config.yaml`` records the width it
    trained with. ``hidden`` is for the fully connected ``gan``; ``cond_d`` and
    ``embed_dim`` for ``cgan`` and ``semicond``; ``mbstd`` (minibatch standard deviation in D) for ``dcgan``, ``bigan``,
    ``cgan`` and ``semicond``, ``pack`` (D judges that many images at once, PacGAN; the batch must divide by it) and ``clusters`` (self-conditioning on that many label-free pixel clusters of the training images, see ``models.clusters``; 0 = off) and ``d_head`` (width of a hidden layer between D's last features and its logit; 0 = one 4x4 convolution, Radford et al.'s head) and ``d_classes`` (weight of a class head on D's features trained on the real images' labels; G stays unconditional; 0 = off) and ``d_class_projection`` (D's logit gains a projection on the class that head infers; off without the head) and ``g_class_share`` (weight of a term in G's loss: the divergence from the data's class shares to those the head finds among G's batch; off without the head) for ``dcgan`` and ``bigan``, ``unary`` (D also scores the image and the latent alone, BigBiGAN) for ``bigan``, ``mbstd_by_class`` (taken within each class of the batch) and ``g_cond`` (``concat``: class embedding beside z; ``cbn``: per-class modulation of G's batch norms) for ``cgan``. ``codes`` (blocks ``DIST:DIM[:k=v,...]``), ``code_correlation`` (between the
    dimensions of a block), ``code_weight`` and ``class_weight`` (of the MSE code and class terms) for ``semicond``. ``normal_class`` (the
    class it trains on when ``data.classes`` is empty) and the weights of the adversarial, reconstruction, total
    variation and encoding terms for ``dgm``; ``abnormal_weight`` > 0 makes ``dgm`` train on the abnormal classes
    too (their synthesized normal image must fool D, their residual is kept sparse by ``sparsity_weight``);
    ``score_shift`` (pixels, 0 = off) makes its residual maps and pixel scores the consensus of inputs shifted by
    up to that many pixels (see ``models.dgm.shift_consensus``); ``standardize`` (``none``, or steps joined by ``+`` from
    ``pose``, ``intensity``, ``fill`` and ``smooth``) moves its inputs into a common frame first: pose aligned with an
    atlas of the normal training images, the margin that leaves filled from the atlas, one resolution, intensities
    mapped onto theirs (see ``nets.standardize``). For ``ddpm`` (see ``models.ddpm``):
    ``g_channels`` is the UNet's base width, ``res_blocks`` residual blocks per level, self-attention at resolutions
    up to ``attention_px``; ``timesteps`` of the ``schedule`` (``linear_beta``, ``scaled_linear_beta``,
    ``sigmoid_beta``, ``cosine``); ``prediction`` (``epsilon`` or ``v_prediction``); ``min_snr_gamma`` (0 = every
    image's loss weighted alike; gamma > 0: Min-SNR-gamma weighting of the timesteps); ``label_dropout`` (the share of
    training images shown with the null class, for classifier-free guidance); ``sample_steps`` (DDIM steps),
    ``guidance`` (classifier-free guidance weight, 1 = none) and ``sample_eta`` (DDIM's eta: 0 adds no noise while
    sampling, 1 as much as the ancestral sampler) for sampling, which ``cxrgan sample --sample-steps --guidance
    --eta`` override."""

    family: str = "dcgan"
    z_dim: int = 100
    g_channels: int = 0
    d_channels: int = 0
    hidden: int = 256
    spectral_norm: bool = False
    cond_d: str = "projection"
    embed_dim: int = 32
    mbstd: bool = False
    mbstd_by_class: bool = False
    unary: bool = False
    pack: int = 1
    clusters: int = 0
    d_head: int = 0
    d_classes: float = 0.0
    d_class_projection: bool = False
    g_class_share: float = 0.0
    g_cond: str = "concat"
    codes: list[str] = field(default_factory=_default_codes)
    code_correlation: float = 0.0
    code_weight: float = 1.0
    class_weight: float = 1.0
    normal_class: str = "NORMAL"
    adv_weight: float = 1.0
    rec_weight: float = 20.0
    tv_weight: float = 1.0
    enc_weight: float = 1.0
    abnormal_weight: float = 0.0
    sparsity_weight: float = 2.0
    score_shift: int = 1
    standardize: str = "none"
    res_blocks: int = 1
    attention_px: int = 8
    timesteps: int = 1000
    schedule: str = "cosine"
    prediction: str = "epsilon"
    min_snr_gamma: float = 0.0
    label_dropout: float = 0.1
    sample_steps: int = 25
    guidance: float = 1.0
    sample_eta: float = 1.0

    def for_size(self, image_size: int) -> "ModelConfig":
        """This section with a width left at 0 (``g_channels``, ``d_channels``) set to :func:`default_width`."""
        w = default_width(image_size)
        return dataclasses.replace(self, g_channels=self.g_channels or w, d_channels=self.d_channels or w)


def default_width(image_size: int) -> int:
    """The width (``model.g_channels``, ``model.d_channels``) of a run that leaves it at 0, by image size: 64 up to
    64 px, 32 from 128 px.

    A convolutional network gains a stage per doubling of the size (:func:`cxrgan.nets.blocks.stage_channels`) and
    doubles its channels at every resolution with it, so at a fixed width a 128 px run costs about four times a
    64 px run per image. At width 32 a 128 px network has the 64 px default's channels at every resolution from 8x8
    up, plus a 32-channel stage at full size; every 128 px figure of ``docs/results/sizes`` and the 128 px DGM were
    measured at width 32, and a 50-epoch 128 px CGAN trains in about a third of the time it takes at width 64."""
    return 64 if image_size <= 64 else 32


@dataclass
class LossConfig:
    """Adversarial loss ``bce`` (non-saturating), ``hinge`` or ``wgan-gp``; gradient-penalty weight; R1 gamma;
    ``mode_seeking``: weight of the mode-seeking term in G's loss (MSGAN; 0 = off; not for the dgm, whose G
    translates images)."""

    kind: str = "bce"
    gp_weight: float = 10.0
    r1_gamma: float = 0.0
    mode_seeking: float = 0.0


@dataclass
class OptimConfig:
    """Adam for each phase (Radford et al.'s defaults); ``d_steps`` D updates per G update.

    ``lr_e``: the learning rate of an encoder that the G phase trains beside G (the BiGAN's E); 0 = ``lr_g``."""

    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1
    lr_e: float = 0.0

    def rate(self, phase: str, module: str) -> float:
        """The learning rate of ``module`` in ``phase`` (``D`` or ``G``)."""
        if phase == "D":
            return self.lr_d
        return self.lr_e if module == "E" and self.lr_e > 0 else self.lr_g


def _acquisition_kinds() -> tuple[str, ...]:
    from ..data.acquisition import KINDS

    return KINDS


def _unknown_kinds(spec: str) -> list[str]:
    return [k for k in (p.strip() for p in spec.split(",")) if k and k not in _acquisition_kinds()]


@dataclass
class AugmentConfig:
    """Augmentation. ``policy``: differentiable augmentation for small data, applied to real and fake alike inside
    D's view: a comma-separated subset of ``translation``, ``cutout``, ``color`` (brightness/contrast); empty = off.
    ``acquisition``: random acquisition shifts (exposure, contrast, sharpness, noise, rotation, translation, zoom) of
    the training images themselves, each up to this multiple of its strong setting (0 = off, 1 = up to strong);
    the family then learns images acquired in all those ways (see ``cxrgan.data.acquisition``).
    ``acquisition_kinds``: which of those kinds (comma-separated; empty = all of them).
    """

    policy: str = ""
    translation: float = 0.125
    cutout: float = 0.5
    acquisition: float = 0.0
    acquisition_kinds: str = ""


@dataclass
class DataConfig:
    """The prepared dataset and which part of it to train on (``classes`` empty = all). ``in_memory``: ``auto``
    loads the training images into memory up to 4 GiB and reads larger sets from disk batch by batch;
    ``always`` or ``never`` force either."""

    path: str = ""
    classes: list[str] = field(default_factory=list)
    split: str = "train"
    in_memory: str = "auto"


@dataclass
class TrainConfig:
    """Everything a run needs. ``steps`` counts G updates; ``epochs`` > 0 overrides it.

    precision: ``auto`` (bf16 autocast where it is native: CUDA, or a CPU with AVX-512 BF16 or AMX; fp32
    elsewhere), ``fp32`` or ``bf16``.
    ema_decay: 0 disables the generator EMA. ema_warmup: early on the decay is ``(1 + step) / (ema_warmup + step)``
    (above 1; the average then spans about ``step / (ema_warmup - 1)`` steps) until that reaches ``ema_decay``.
    ckpt_every: steps between checkpoints and quality evaluations.
    grid_every: steps between sample grids (0 = once per epoch, at most about 100 per run). collapse_ratio: warn of mode collapse when
    sample diversity falls below this fraction of real-image diversity, from step ``collapse_warmup`` on (an
    untrained generator has little diversity too); a checkpoint below the ratio is never chosen as best, at any step.
    on_collapse: what the loop does when it flags collapse: ``continue`` (warn only), ``stop`` (write the checkpoint and
    stop with the resume command), ``rollback`` (return to the best, healthy checkpoint with the D learning rate
    times ``collapse_lr_factor``, at most ``max_rollbacks`` times, then stop).
    quality_features: feature space of the training-time FD: ``auto`` (the dataset's trained classifier space once
    it passed the distortion check, else ``randconv-v1``), ``randconv`` or a trained extractor directory.
    compile: compile the trained networks' forward with ``torch.compile`` (in place; checkpoints are unchanged).
    Worth it on a GPU for long runs; compiling takes a minute or more, and on a CPU it needs a C++ compiler.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 64
    steps: int = 2000
    epochs: int = 0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    ema_decay: float = 0.999
    ema_warmup: float = 10.0
    log_every: int = 25
    ckpt_every: int = 500
    grid_every: int = 0
    keep_checkpoints: int = 2
    eval_samples: int = 1024
    collapse_ratio: float = 0.5
    collapse_warmup: int = 500
    quality_features: str = "auto"
    on_collapse: str = "continue"
    collapse_lr_factor: float = 0.5
    max_rollbacks: int = 3

    def validate(self) -> "TrainConfig":
        from ..models.losses import LOSS_KINDS
        from ..models.registry import get_family

        get_family(self.model.family)
        checks = [
            (self.loss.kind in LOSS_KINDS, f"loss.kind must be one of {', '.join(LOSS_KINDS)}, got {self.loss.kind!r}"),
            (self.precision in ("auto", "fp32", "bf16"), f"precision must be auto, fp32 or bf16, got {self.precision!r}"),
            (self.data.in_memory in ("auto", "always", "never"), f"data.in_memory must be auto, always or never, got {self.data.in_memory!r}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (min(self.model.g_channels, self.model.d_channels) >= 0,
             f"model.g_channels and model.d_channels must be at least 0 (0: by image size), got {self.model.g_channels} "
             f"and {self.model.d_channels}"),
            (self.steps >= 1 or self.epochs >= 1, "give a positive steps or epochs budget"),
            (self.optim.d_steps >= 1, "optim.d_steps must be at least 1"),
            (min(self.optim.lr_g, self.optim.lr_d) > 0 and self.optim.lr_e >= 0,
             f"optim.lr_g and optim.lr_d must be above 0 and optim.lr_e at least 0 (0: lr_g), got {self.optim.lr_g}, "
             f"{self.optim.lr_d} and {self.optim.lr_e}"),
            (self.model.pack >= 1 and self.batch_size % self.model.pack == 0,
             f"model.pack must be at least 1 and divide batch_size ({self.batch_size}), got {self.model.pack}"),
            (self.loss.mode_seeking >= 0, f"loss.mode_seeking must be at least 0, got {self.loss.mode_seeking}"),
            (self.augment.acquisition >= 0, f"augment.acquisition must be at least 0, got {self.augment.acquisition}"),
            (not _unknown_kinds(self.augment.acquisition_kinds),
             f"augment.acquisition_kinds: unknown kind(s) {', '.join(_unknown_kinds(self.augment.acquisition_kinds))}; "
             f"use some of {', '.join(_acquisition_kinds())}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.ema_warmup > 1.0, f"ema_warmup must be above 1, got {self.ema_warmup}"),
            (self.ckpt_every >= 1 and self.log_every >= 1, "ckpt_every and log_every must be at least 1"),
            (self.eval_samples >= 16, "eval_samples must be at least 16"),
            (self.on_collapse in ("continue", "stop", "rollback"), f"on_collapse must be continue, stop or rollback, got {self.on_collapse!r}"),
            (0 < self.collapse_lr_factor <= 1, f"collapse_lr_factor must be in (0, 1], got {self.collapse_lr_factor}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise CxrganError(msg)
        if self.model.family == "semicond":
            from ..models.codes import CodeSpace

            CodeSpace(self.model.codes, self.model.code_correlation)  # one clear message per bad block
        unknown = set(filter(None, (p.strip() for p in self.augment.policy.split(",")))) - {"translation", "cutout", "color"}
        if unknown:
            raise CxrganError(f"augment.policy: unknown {', '.join(sorted(unknown))}; use translation, cutout, color")
        return self

    def for_size(self, image_size: int) -> "TrainConfig":
        """This configuration with the model's widths set for ``image_size`` (:meth:`ModelConfig.for_size`), as a
        run on images of that size saves it."""
        return dataclasses.replace(self, model=self.model.for_size(image_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """Short hash of the config (identifies what a checkpoint was trained with)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise CxrganError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise CxrganError(f"unknown config key {where + '.' if where else ''}{sorted(unknown)[0]}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        t = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(t):
            kwargs[name] = _from_dict(t, value or {}, key)
        else:
            kwargs[name] = _coerce(value, t, key)
    return cls(**kwargs)


def _coerce(value: Any, t: Any, key: str) -> Any:
    origin = typing.get_origin(t)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise CxrganError(f"{key} must be a list, got {value!r}")
        return [str(v) for v in value]
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise CxrganError(f"{key} must be true or false, got {value!r}")
    if t in (int, float):
        if isinstance(value, bool):
            raise CxrganError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CxrganError(f"{key} must be a number, got {value!r}") from None
        if t is int:
            if number != int(number):
                raise CxrganError(f"{key} must be a whole number, got {value!r}")
            return int(number)
        return number
    return str(value)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested dicts (unknown keys are errors)."""
    return _from_dict(TrainConfig, data, "")


def family_preset(family: str) -> dict[str, Any]:
    """A family's measured defaults: the partial config tree in ``cxrgan/configs/FAMILY.yaml`` ({} if none);
    a ``_base: OTHER`` key starts from another family's preset."""
    from importlib import resources

    res = resources.files("cxrgan") / "configs" / f"{family}.yaml"
    if not res.is_file():
        return {}
    preset = yaml.safe_load(res.read_text(encoding="utf-8")) or {}
    base = preset.pop("_base", None)
    return _merge(family_preset(base), preset) if base else preset


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the chosen family's preset (:func:`family_preset`), then the YAML file at ``path`` (if any),
    then ``key.sub=value`` overrides. The family is the last ``model.family`` override, else the file's, else
    the default; a saved ``RUN/config.yaml`` is complete, so reloading it reproduces the run whatever the presets."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise CxrganError(f"config file {p} does not exist") from None
        except yaml.YAMLError as exc:
            raise CxrganError(f"config file {p} is not valid YAML ({exc})") from None
    config_from_dict(data)  # unknown keys in the file are reported against the file, before any merging
    family = (data.get("model") or {}).get("family", ModelConfig.family)
    for item in overrides or []:
        key, _, raw = item.partition("=")
        if key.strip() == "model.family" and raw.strip():
            family = str(yaml.safe_load(raw))
    merged = _merge(_merge(TrainConfig().to_dict(), family_preset(family)), data)
    for item in overrides or []:
        if "=" not in item:
            raise CxrganError(f"override {item!r}: expected key=value, e.g. loss.kind=hinge")
        key, raw = item.split("=", 1)
        node = merged
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise CxrganError(f"override {item!r}: unknown config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise CxrganError(f"override {item!r}: unknown config key {key!r}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return config_from_dict(merged)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    from ..utils.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
