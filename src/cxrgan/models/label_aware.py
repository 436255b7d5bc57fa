"""A discriminator that also learns the labels, for the unconditional families (``dcgan``, ``bigan``).

With ``d_classes=w`` > 0 a class head on D's trunk features (:class:`~cxrgan.nets.blocks.ClassHead`) learns the
real images' labels by cross-entropy, weight ``w`` (a semi-supervised discriminator: Odena 2016; Salimans et al.
2016), so the features that D judges real and fake by separate the classes from the start. G stays unconditional:
it draws no class, and nothing in its loss names one.

Why: an unconditional generator maps one connected latent space onto classes whose images lie apart (NORMAL and
PNEUMONIA radiographs) and, until it has learned them, draws images in between (on ``cxr_real_64`` a quarter of a
DCGAN's samples at step 1,000, against 7-9 % of real images). A D whose features already tell the classes apart
shows G sooner where its images differ from either class (``docs/results/long_runs/label_aware``). A second term
was measured and left out: asking G for images the head classifies with confidence, in the data's class shares
(CatGAN's), raised the pooled diversity at step 1,000 (0.79 against 0.75) while recall fell (0.63 against 0.76).

With ``d_class_projection`` D also judges each image against the class its head infers: its logit gains Miyato &
Koyama's projection term, ``<embed(c), pooled features>``, with the head's class verdict ``c`` (held fixed, so the
head still learns from the labels alone) where a conditional D has the given label. D then learns, per class, what
real images of the class look like, and an image between the classes is judged as a poor image of the class it
leans to, so G is asked for a realistic member of one class or the other. The CatGAN term above asked for
confident verdicts outright and overshot; here the pull is D's, learned from real images of the class, and ends
where G's images of a class look like real ones. On ``cxr_real_64`` (``docs/results/long_runs/class_projection``)
the classes of the DCGAN's and the BiGAN's samples separate sooner and their diversity at step 1,000 rises on both
seeds (DCGAN: 0.86 against 0.76 of real, FD halved); both families have it on by default.

The head trains only where there are labels to learn: a training subset of two classes or more, one class per image.
On one class (a per-class run, ``--classes NORMAL``), a dataset of one class or a multi-label dataset it stays
untrained and D's loss is the adversarial one alone, so the option can be a family's default. A family that uses
this mixin says how D scores an input together with its trunk's features (:meth:`discriminate_features`) and keeps
the head as ``D.classes`` (``None`` when the dataset has fewer than two classes).

With ``g_class_share=w`` > 0 G's loss gains ``w`` times a term on the classes' proportions among its samples, not on
any one sample: the Kullback-Leibler divergence from the training subset's class shares to the batch mean of the
head's class probabilities on G's images (CatGAN's marginal term, with the data's shares in place of uniform ones, and
without its per-sample confidence term, which cost recall above). It is zero when G draws each class as often as the
data holds it, whatever an image looks like, so it asks for nothing but balance: a G that has learned the images and
draws one class too seldom (the BiGAN's NORMAL radiographs at half their share at step 1,000) is pulled, through the
head, toward more images of it. On ``cxr_real_64`` (``docs/results/long_runs/class_share``) weight 1 raised the
BiGAN's least-drawn class at step 1,000 from 0.56 and 0.69 of its real share to 0.87 and 0.82, its diversity there
from 0.79 and 0.81 of real to 0.86 and 0.85, and lowered its final FD (0.66 and 1.04 against 1.34 and 1.57); it is
the BiGAN's default. The DCGAN holds its diversity without it and keeps it off.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.distributed import gather_rows
from .base import Augment, Batch


class LabelAwareD:
    """Mixin for an unconditional :class:`~cxrgan.models.base.Family` (listed before it in the bases)."""

    d_classes: float = 0.0
    g_class_share: float = 0.0
    _class_shares: torch.Tensor | None = None  # (K,) the bound training subset's class shares
    _labels_to_learn: bool = False  # the bound training subset is single-label and holds two classes or more

    def init_label_head(self, d_classes: float, num_classes: int, g_class_share: float = 0.0) -> int:
        """Check and keep the weights; returns the number of classes D's head should have (0: no head, and then no
        projection on its verdict and no class-share term either, so ``model.d_classes=0`` switches the whole
        label-aware D off). Raises ``ValueError`` for a negative weight."""
        for name, weight in (("d_classes", d_classes), ("g_class_share", g_class_share)):
            if weight < 0:
                raise ValueError(f"{name} is a weight >= 0, got {weight}")
        self.d_classes, self.g_class_share = d_classes, g_class_share
        return num_classes if d_classes and num_classes >= 2 else 0

    def bind_labels(self, data) -> None:
        """Note whether the training subset (:class:`~cxrgan.train.data.TrainData`) has labels for the head to learn:
        one class per image (not multi-label) and two classes or more. Where it has none, the projection on the
        head's verdict is switched off too (an untrained head infers nothing)."""
        self._labels_to_learn = not data.dataset.multilabel and len(np.unique(data.labels)) >= 2
        if self._labels_to_learn:
            counts = np.bincount(data.labels, minlength=self.num_classes).astype(np.float64)
            self._class_shares = torch.from_numpy(counts / counts.sum()).float()
        if self.D.classes is not None:
            self.D.classes.project_on = self.D.classes.embed is not None and self._labels_to_learn

    @property
    def label_head_on(self) -> bool:
        """Whether D's class head trains: it exists (``d_classes`` > 0 on two classes or more) and the bound
        training subset is single-label and holds two classes or more. A subset of one class (a per-class run) has
        nothing for the head to tell apart; the head is kept untrained, so the checkpoint's layout does not depend
        on the subset."""
        return self.D.classes is not None and self._labels_to_learn

    def discriminate_features(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits for ``inputs`` and its trunk's features of the image (what ``D.classes`` reads)."""
        raise NotImplementedError

    @property
    def metric_columns(self) -> tuple[str, ...]:
        if self.D.classes is None:
            return ()
        return ("d_class_ce",) + (("g_class_kl",) if self.g_class_share else ())

    def class_share_divergence(self, h: torch.Tensor) -> torch.Tensor:
        """``KL(real shares || batch shares)``: the divergence from the bound training subset's class shares to the
        mean of the head's class probabilities over the (global) batch of G's images whose trunk features are ``h``.
        Differentiable in ``h``; zero when the batch's shares equal the data's."""
        probs = gather_rows(torch.softmax(self.D.classes(h), dim=1)).mean(0)
        target = self._class_shares.to(probs.device)
        return (torch.xlogy(target, target) - target * probs.clamp_min(1e-8).log()).sum()

    def generator_terms(self, loss: torch.Tensor, stats: dict[str, torch.Tensor],
                        features: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's ``loss`` plus the weighted class-share term on D's trunk ``features`` of G's images (logged as
        ``g_class_kl``); unchanged when the weight is 0 or the head has no labels to learn."""
        if not (self.g_class_share and self.label_head_on):
            return loss, stats
        term = self.class_share_divergence(features)
        return loss + self.g_class_share * term, {**stats, "g_class_kl": term.detach()}

    def d_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.label_head_on:
            return super().d_phase(batch, augment)
        y = batch.y
        with torch.no_grad():
            fake = self.fake_inputs(self.train_z(len(y), y.device), y)
        real, fake = self.augmented(self.real_inputs(batch), augment), self.augmented(fake, augment)
        real_logits, h = self.discriminate_features(real, y)
        fake_logits = self.discriminate(fake, y)
        adversarial = self.d_adversarial(real, fake, real_logits, fake_logits, y)
        class_loss = F.cross_entropy(self.D.classes(h), y)
        return adversarial + self.d_classes * class_loss, {**self.d_stats(adversarial, real_logits, fake_logits),
                                                           "d_class_ce": class_loss.detach()}
