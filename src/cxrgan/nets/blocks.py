"""Network building blocks. Images are ``(N, 1, S, S)`` float in [-1, 1]; latents are ``(N, Z)``.

Convolutional generators and discriminators follow Radford et al. (DCGAN): fractionally-strided
convolutions up, strided convolutions down, batch norm, no pooling, ReLU in G and LeakyReLU(0.2) in D;
depth follows the image size (one stage per doubling from 4x4).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm


def n_stages(size: int) -> int:
    """Number of 2x stages between 4x4 and ``size`` (32 -> 3, 64 -> 4, ..., 256 -> 6)."""
    k = int(math.log2(size)) - 2
    if size != 2 ** (k + 2) or k < 1:
        raise ValueError(f"image size must be a power of two >= 8, got {size}")
    return k


def stage_channels(size: int, base: int, cap: int = 8) -> list[int]:
    """Channels from the 4x4 end to the full-resolution end, e.g. 64 px, base 64 -> [512, 256, 128, 64]."""
    k = n_stages(size)
    return [base * min(cap, 2 ** (k - 1 - i)) for i in range(k)]


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialization: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            refresh_spectral_norm(m)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def refresh_spectral_norm(module: nn.Module) -> None:
    """Estimate the singular vectors of ``module``'s own spectrally normalized weights again (15 power iterations,
    as torch does when the norm is registered). Call after re-drawing those weights: the vectors torch estimated
    belong to the weights it was given, and a module evaluated before any training-mode forward (which iterates
    once) would divide its new weights by a near-zero ``u^T W v`` and give outputs thousands of times too large."""
    for plist in getattr(module, "parametrizations", {}).values():
        for param in plist:
            if isinstance(param, _SpectralNorm) and plist.original.ndim > 1:
                param._power_method(param._reshape_weight_to_matrix(plist.original.detach()), 15)


def maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(layer) if enabled else layer


def projection_embedding(num_classes: int, channels: int, sn: bool) -> nn.Module:
    """A class embedding ``(K, C)`` for Miyato & Koyama's projection term (:func:`project`), spectrally normalized
    with ``sn``, its weights drawn small like every other weight (N(0, 0.02)) so the term does not swamp the logit."""
    embed = maybe_sn(nn.Embedding(num_classes, channels), sn)
    nn.init.normal_(embed.parametrizations.weight.original if sn else embed.weight, 0.0, 0.02)
    refresh_spectral_norm(embed)
    return embed


def project(embed: nn.Module, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The projection term ``(N,)``: ``<embed(y), h summed over positions>`` for features ``h`` ``(N, C, H, W)`` and
    ``y`` class indices ``(N,)`` or class weights ``(N, K)`` (one-hot rows that a gradient penalty can vary, or a
    classifier's verdict)."""
    e = y.to(embed.weight.dtype) @ embed.weight if y.is_floating_point() else embed(y)
    return (e * h.sum(dim=(2, 3))).sum(dim=1)


class ConvGenerator(nn.Module):
    """DCGAN generator: ``(N, in_dim)`` -> ``(N, out_ch, size, size)`` in [-1, 1]."""

    def __init__(self, in_dim: int, size: int, base: int = 64, out_ch: int = 1) -> None:
        super().__init__()
        ch = stage_channels(size, base)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], out_ch, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class ConvTrunk(nn.Module):
    """DCGAN discriminator body: ``(N, in_ch, S, S)`` -> ``(N, C, 4, 4)`` features.

    norm: ``bn`` (Radford) or ``none`` (for WGAN-GP, where batch norm breaks the per-sample penalty,
    and with spectral norm).
    """

    def __init__(self, size: int, base: int = 64, in_ch: int = 1, norm: str = "bn", sn: bool = False) -> None:
        super().__init__()
        ch = stage_channels(size, base)[::-1]
        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(in_ch, ch[0], 4, 2, 1), sn), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers.append(maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), sn))
            if norm == "bn":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
        self.net = nn.Sequential(*layers)
        self.out_channels = ch[-1]
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Karras et al.'s minibatch standard deviation: one extra channel holding the mean standard deviation of
    the features across groups of ``group`` samples, so D can see a batch that lacks variety. Groups are
    consecutive samples, so a batch split into contiguous per-process shards (a multiple of ``group`` each)
    is grouped exactly as the whole batch."""
    n, c, hh, ww = h.shape
    g = min(group, n)
    while n % g:
        g -= 1
    # Features last (a free view of a channels-last tensor) and the variance written out: the mean over
    # features does not care about their order, and aten::var on the grouped 5-d view ran 5-10x slower on
    # the CPU, a sixth of a DCGAN training step at 64 px.
    y = h.float().permute(0, 2, 3, 1).reshape(n // g, g, hh * ww * c)
    dev = y - y.mean(dim=1, keepdim=True)
    y = ((dev * dev).mean(dim=1) + 1e-8).sqrt().mean(dim=1)  # (n // g,)
    y = y.to(h.dtype).repeat_interleave(g)[:, None, None, None].expand(n, 1, hh, ww)
    return torch.cat([h, y], dim=1)


def classwise_stddev(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Minibatch standard deviation per class: one extra channel holding, for each sample, the standard deviation
    of the features over the batch's samples of its class (averaged over the features). The grouped version
    (:func:`minibatch_stddev`) mixes classes, and the spread between classes then hides a generator that draws
    one image per class. Statistics are those of the global batch when several processes train (two passes, with
    differentiable all-reduces, as in synced batch norm). A class with one sample in the batch reads 0, for real
    and synthetic batches alike."""
    from ..runtime.distributed import sum_over_processes

    n, c, hh, ww = h.shape
    x = h.float().flatten(1)
    onehot = nn.functional.one_hot(y, num_classes).float()  # (n, K)
    packed = sum_over_processes(torch.cat([onehot.T @ x, onehot.sum(0)[:, None]], dim=1))
    count = packed[:, -1:].clamp(min=1)
    mean = packed[:, :-1] / count  # (K, F)
    spread = sum_over_processes(onehot.T @ (x - mean[y]) ** 2) / count
    std = (spread + 1e-8).sqrt().mean(dim=1)  # (K,)
    return torch.cat([h, std[y].to(h.dtype)[:, None, None, None].expand(n, 1, hh, ww)], dim=1)


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator with optional class conditioning: ``(N, 1, S, S)`` -> logits ``(N,)``.

    cond: ``none``; ``projection`` (Miyato & Koyama: logit += <embed(y), pooled features>; ``y`` class indices or
    ``(N, K)`` class weights); or ``concat``
    (one-hot label planes concatenated to the input image). mbstd: append the minibatch standard deviation
    channel before the head; with ``mbstd_by_class`` (conditional only) taken within each class of the batch.
    pack (unconditional only): PacGAN (Lin et al., 2018): D judges ``pack`` images at once, stacked as channels,
    and returns one logit per pack, ``(N / pack,)``; a generator that draws too few kinds of image is then easier
    to tell from the data, because a pack of its samples is more alike than a pack of real images.
    head: 0 for Radford et al.'s head (one 4x4 convolution: the logit is linear in the trunk's last features);
    ``> 0`` for a hidden layer of that width between them (flatten, linear, leaky ReLU, linear), as in the BiGAN's
    joint discriminator, so the logit can tell real from fake differently in different regions of feature space.
    classes: > 0 adds a :class:`ClassHead` of that many classes on the trunk's features (``self.classes``), for an
    unconditional family whose D also learns the real images' labels (``model.d_classes``); with
    ``class_projection`` the logit gains a projection on the head's verdict (:meth:`ClassHead.projection`).
    """

    def __init__(self, size: int, base: int = 64, norm: str = "bn", sn: bool = False, num_classes: int = 0, cond: str = "none",
                 mbstd: bool = False, mbstd_by_class: bool = False, pack: int = 1, head: int = 0, classes: int = 0,
                 class_projection: bool = False) -> None:
        super().__init__()
        if classes and pack > 1:
            raise ValueError("pack > 1 judges packs of images, and the class head (model.d_classes) one image at a "
                             "time: add --set model.d_classes=0")
        if head < 0:
            raise ValueError(f"the discriminator's head width must be 0 (one 4x4 convolution) or positive, got {head}")
        if pack < 1 or (pack > 1 and cond != "none"):
            raise ValueError(f"pack must be >= 1, and 1 for a conditional discriminator; got {pack} with cond={cond!r}")
        self.cond, self.num_classes, self.mbstd, self.pack = cond, num_classes, mbstd, pack
        self.mbstd_by_class = mbstd_by_class and num_classes > 1 and cond != "none"
        in_ch = pack * (1 + (num_classes if cond == "concat" else 0))
        self.trunk = ConvTrunk(size, base, in_ch, norm, sn)
        head_ch = self.trunk.out_channels + int(mbstd)
        if head:
            self.head = nn.Sequential(nn.Flatten(), maybe_sn(nn.Linear(head_ch * 16, head), sn), nn.LeakyReLU(0.2, True),
                                      maybe_sn(nn.Linear(head, 1), sn))
        else:
            self.head = maybe_sn(nn.Conv2d(head_ch, 1, 4, 1, 0), sn)
            dcgan_init(self.head)
        self.embed = projection_embedding(num_classes, self.trunk.out_channels, sn) if cond == "projection" else None
        self.classes = (ClassHead(self.trunk.out_channels * 16, classes, project=self.trunk.out_channels if class_projection else 0,
                                  sn=sn) if classes else None)

    def score(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N,)`` and the trunk's features ``(N, C, 4, 4)`` (for auxiliary heads); ``N / pack`` of each
        when D judges packs (consecutive images form a pack)."""
        if self.pack > 1:
            if len(x) % self.pack:
                raise ValueError(f"a discriminator that judges packs of {self.pack} images needs a batch divisible by "
                                 f"{self.pack}; got {len(x)}")
            x = x.reshape(len(x) // self.pack, self.pack * x.shape[1], x.shape[2], x.shape[3])
        if self.cond == "concat":
            planes = nn.functional.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        h = self.trunk(x)
        head_in = h
        if self.mbstd:
            head_in = classwise_stddev(h, y, self.num_classes) if self.mbstd_by_class else minibatch_stddev(h)
        logit = self.head(head_in).flatten()
        if self.embed is not None:
            logit = logit + project(self.embed, y, h)
        inferred = self.classes.projection(h) if self.classes is not None else None
        if inferred is not None:
            logit = logit + inferred
        return logit, h

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(x, y)[0]


class ClassHead(nn.Module):
    """Class logits ``(N, K)`` from a discriminator trunk's features ``(N, C, 4, 4)`` (or flat ``(N, F)``): layer
    norm, a hidden layer and a linear read-out. The layer norm comes first because a spectrally normalized trunk
    emits small features that a plain linear head learns from slowly.

    project: > 0 (the trunk's channels ``C``) adds a projection on the head's own verdict (:meth:`projection`), a
    term of D's logit: Miyato & Koyama's projection discriminator with the class that the head infers in place of a
    given label (``model.d_class_projection``). ``project_on`` switches the term off (the family does so where the
    head has no labels to learn); its weights stay, so a checkpoint's layout does not depend on the data."""

    def __init__(self, features: int, num_classes: int, hidden: int = 256, project: int = 0, sn: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.LayerNorm(features), nn.Linear(features, hidden), nn.LeakyReLU(0.2, True),
                                 nn.Linear(hidden, num_classes))
        self.embed = projection_embedding(num_classes, project, sn) if project else None
        self.project_on = self.embed is not None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.float())

    def projection(self, h: torch.Tensor) -> torch.Tensor | None:
        """``(N,)`` ``<embed^T p, pooled h>``, where ``p`` is the head's class verdict on ``h`` ``(N, C, 4, 4)``, held
        fixed (no gradient: the head learns from the labels alone); ``None`` without the projection or while it is
        switched off. D so judges each image against what real images of the class it looks like look like."""
        if self.embed is None or not self.project_on:
            return None
        return project(self.embed, torch.softmax(self(h), dim=1).detach(), h)


class ConvEncoder(nn.Module):
    """BiGAN encoder: ``(N, 1, S, S)`` -> latents ``(N, z_dim)`` (a DCGAN trunk and a 4x4 convolution)."""

    def __init__(self, size: int, z_dim: int, base: int = 64) -> None:
        super().__init__()
        self.trunk = ConvTrunk(size, base, 1, "bn", False)
        self.head = nn.Conv2d(self.trunk.out_channels, z_dim, 4, 1, 0)
        dcgan_init(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).flatten(1)


class MLPGenerator(nn.Module):
    """The original fully connected GAN generator: ``(N, z)`` -> ``(N, 1, S, S)`` in [-1, 1]."""

    def __init__(self, z_dim: int, size: int, hidden: int = 256) -> None:
        super().__init__()
        dims = [z_dim, hidden, hidden * 2, hidden * 4]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Linear(dims[-1], size * size), nn.Tanh()]
        self.net, self.size = nn.Sequential(*layers), size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, self.size, self.size)


class MLPDiscriminator(nn.Module):
    """The original fully connected GAN discriminator: ``(N, 1, S, S)`` -> logits ``(N,)``."""

    def __init__(self, size: int, hidden: int = 256, sn: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            maybe_sn(nn.Linear(size * size, hidden * 2), sn), nn.LeakyReLU(0.2, True),
            maybe_sn(nn.Linear(hidden * 2, hidden), sn), nn.LeakyReLU(0.2, True),
            maybe_sn(nn.Linear(hidden, 1), sn),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1)).flatten()


class JointDiscriminator(nn.Module):
    """BiGAN discriminator on ``(x, z)`` pairs: a conv trunk for x, an MLP for z, a joint MLP -> ``(N,)``.
    mbstd: append the minibatch standard deviation channel to the image features (:func:`minibatch_stddev`).
    unary: also score x alone and z alone (BigBiGAN, Donahue & Simonyan 2019) and return ``(N, 3)``: the joint,
    image and latent logits, each a verdict of its own that the loss treats like the joint one. The image score
    lets G learn images from D as a plain GAN would, instead of only through the pair. classes: > 0 adds a
    :class:`ClassHead` of that many classes on the image trunk's features (``self.classes``); with
    ``class_projection`` the verdict on the pair gains a projection on the head's verdict
    (:meth:`ClassHead.projection`)."""

    def __init__(self, size: int, z_dim: int, base: int = 64, norm: str = "none", sn: bool = False, hidden: int = 512,
                 mbstd: bool = False, unary: bool = False, classes: int = 0, class_projection: bool = False) -> None:
        super().__init__()
        self.trunk = ConvTrunk(size, base, 1, norm, sn)
        self.mbstd = mbstd
        feat = (self.trunk.out_channels + int(mbstd)) * 16
        self.z_path = nn.Sequential(maybe_sn(nn.Linear(z_dim, hidden), sn), nn.LeakyReLU(0.2, True))
        self.joint = nn.Sequential(
            maybe_sn(nn.Linear(feat + hidden, hidden * 2), sn), nn.LeakyReLU(0.2, True), maybe_sn(nn.Linear(hidden * 2, 1), sn)
        )
        self.x_score = maybe_sn(nn.Linear(feat, 1), sn) if unary else None
        self.z_score = maybe_sn(nn.Linear(hidden, 1), sn) if unary else None
        self.classes = (ClassHead(self.trunk.out_channels * 16, classes, project=self.trunk.out_channels if class_projection else 0,
                                  sn=sn) if classes else None)

    def score(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The verdicts (as :meth:`forward`) and the image trunk's features ``(N, C, 4, 4)`` (for the class head)."""
        h = self.trunk(x)
        hx = minibatch_stddev(h) if self.mbstd else h
        hx, hz = hx.flatten(1), self.z_path(z)
        joint = self.joint(torch.cat([hx, hz], dim=1))
        inferred = self.classes.projection(h) if self.classes is not None else None
        if inferred is not None:  # a term of the verdict on the pair
            joint = joint + inferred[:, None]
        if self.x_score is None:
            return joint.flatten(), h
        return torch.cat([joint, self.x_score(hx), self.z_score(hz)], dim=1), h

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(x, z)[0]
