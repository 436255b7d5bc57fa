"""``dcgan``: Radford et al.'s deep convolutional GAN; depth follows the image size (32 to 256 px).

With ``clusters=K`` > 0 the DCGAN is self-conditioned (Liu et al., 2020): the training images are split into K
label-free pixel clusters (:mod:`.clusters`), G's batch norms are modulated per cluster (as the CGAN's per class),
D judges an image together with its cluster (projection), and G draws clusters in the data's proportions. The
model stays unconditional: the cluster is part of the latent (its last column), drawn by :meth:`sample_z`, and
no class label is used.

``d_classes`` gives D a class head trained on the real images' labels, and ``d_class_projection`` makes D judge each
image against the class that head infers (:mod:`.label_aware`); G stays unconditional.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets.blocks import ConvDiscriminator, ConvGenerator
from .base import Batch, Family
from .label_aware import LabelAwareD
from .cgan import ConditionalGenerator
from .registry import register


class ClusterGenerator(nn.Module):
    """``[z, cluster]`` ``(N, z_dim + 1)`` -> image: a per-cluster modulated DCGAN generator that carries the
    clusters' shares of the training images (``prior``, a buffer saved with the weights) to draw clusters from."""

    def __init__(self, z_dim: int, clusters: int, size: int, base: int, embed_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = ConditionalGenerator(z_dim, clusters, size, base, embed_dim, "cbn")
        self.register_buffer("prior", torch.full((clusters,), 1.0 / clusters))

    def cluster(self, latent: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64 cluster indices held in the last column of ``latent``."""
        return latent[:, self.z_dim].round().long().clamp(0, len(self.prior) - 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent[:, : self.z_dim], self.cluster(latent))


@register("dcgan")
class DCGAN(LabelAwareD, Family):
    def __init__(self, *, z_dim: int, image_size: int, num_classes: int, g_channels: int = 64, d_channels: int = 64, spectral_norm: bool = False,
                 mbstd: bool = False, pack: int = 1, clusters: int = 0, embed_dim: int = 32, d_head: int = 0, d_classes: float = 0.0,
                 d_class_projection: bool = False, g_class_share: float = 0.0, **kw) -> None:
        super().__init__(z_dim=z_dim, image_size=image_size, num_classes=num_classes, **kw)
        if clusters < 0 or clusters == 1:
            raise ValueError(f"clusters must be 0 (off) or at least 2, got {clusters}")
        head = self.init_label_head(d_classes, num_classes, g_class_share)
        if clusters and pack > 1:
            raise ValueError("clusters and pack > 1 cannot be combined (D judges one image with its cluster)")
        self.clusters = clusters
        self._cluster_of: torch.Tensor | None = None  # cluster of each image of the bound training subset
        if clusters:
            self.G = ClusterGenerator(z_dim, clusters, image_size, g_channels, embed_dim)
            self.D = ConvDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, clusters, "projection", mbstd,
                                       head=d_head, classes=head, class_projection=d_class_projection)
        else:
            self.G = ConvGenerator(z_dim, image_size, g_channels)
            self.D = ConvDiscriminator(image_size, d_channels, self.d_norm(spectral_norm), spectral_norm, mbstd=mbstd, pack=pack,
                                       head=d_head, classes=head, class_projection=d_class_projection)

    # -- self-conditioning on clusters ------------------------------------------------------------------
    def bind_data(self, data) -> None:
        """Note whether the training subset (:class:`~cxrgan.train.data.TrainData`) has labels for D's class head;
        with clusters, cluster it and keep the clusters' shares."""
        self.bind_labels(data)
        if not self.clusters:
            return
        from ..errors import CxrganError
        from .clusters import pixel_clusters

        if len(data) < self.clusters:
            raise CxrganError(f"model.clusters={self.clusters} needs at least as many training images; there are {len(data)}")
        assign = torch.from_numpy(pixel_clusters(data.uint8, len(data), self.clusters))
        self._cluster_of = assign
        self.G.prior.copy_(torch.bincount(assign, minlength=self.clusters).float() / len(assign))

    @property
    def latent_dim(self) -> int:
        return self.z_dim + (1 if self.clusters else 0)

    def draw_clusters(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 1)`` float cluster indices drawn in the training images' proportions."""
        return torch.multinomial(self.G.prior.float().cpu(), n, replacement=True, generator=generator).float()[:, None]

    def extend_latents(self, z: torch.Tensor, generator: torch.Generator | None = None,
                       fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[z, cluster]`` with clusters drawn in the training images' proportions (``z`` as it is without clusters)."""
        return torch.cat([z, self.draw_clusters(len(z), generator)], dim=1) if self.clusters else z

    def sample_z(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        if not self.clusters:
            return super().sample_z(n, generator, device)
        return self.extend_latents(torch.randn(n, self.z_dim, generator=generator), generator).to(device)

    def mode_seeking_pairs(self, latents: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-conditioned: pairs within a cluster, at their distance in ``z`` alone (the cluster column is an index,
        not a coordinate), so the term asks for variety within each cluster as the CGAN's does within each class."""
        if not self.clusters:
            return super().mode_seeking_pairs(latents, y)
        return latents[:, : self.z_dim], self.G.cluster(latents)

    def _onehot(self, cluster: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(cluster.long(), self.clusters).to(device=like.device, dtype=torch.float32)

    def real_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        if not self.clusters:
            return (batch.x,)
        if self._cluster_of is None or batch.rows is None:
            raise RuntimeError("a self-conditioned dcgan needs bind_data and batches that carry their rows")
        return (batch.x, self._onehot(self._cluster_of[torch.from_numpy(batch.rows)], batch.x))

    def fake_inputs(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = self.generate(z, y)
        return (image, self._onehot(self.G.cluster(z), image)) if self.clusters else (image,)

    def discriminate(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        return self.D(inputs[0], inputs[1]) if self.clusters else self.D(inputs[0])

    def discriminate_features(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.D.score(inputs[0], inputs[1]) if self.clusters else self.D.score(inputs[0])
