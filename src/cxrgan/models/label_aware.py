"""A discriminator that also learns the labels, for the unconditional families (``dcgan``, ``bigan``).

An unconditional generator maps one connected latent space onto classes whose images lie apart (NORMAL and
PNEUMONIA radiographs); until it has learned to jump between them it draws images in between, which look like
neither class (on ``cxr_real_64`` a quarter of a DCGAN's samples at step 1,000 against 7-9 % of real images). Two
options use the training images' labels without making G conditional (it still draws no class):

- ``d_classes=w`` > 0: a class head on D's trunk features (:class:`~cxrgan.nets.blocks.ClassHead`) learns the real
  images' labels by cross-entropy, weight ``w`` (a semi-supervised discriminator: Odena 2016; Salimans et al. 2016),
  so the features D judges with separate the classes from the start;
- ``class_entropy=v`` > 0 (needs ``d_classes``): G is asked, weight ``v``, for images that head classifies with
  confidence, drawn in the data's class shares (:func:`.losses.class_confidence`; CatGAN, Springenberg 2016).

A family that uses this mixin says how D scores an input with its trunk's features (:meth:`discriminate_features`)
and keeps the head as ``D.classes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..train.distributed import gather_rows
from . import losses
from .base import Augment, Batch


class LabelAwareD:
    """Mixin for an unconditional :class:`~cxrgan.models.base.Family` (listed before it in the bases)."""

    d_classes: float = 0.0
    class_entropy: float = 0.0
    _prior: torch.Tensor | None = None  # class shares of the bound training subset

    def init_label_terms(self, d_classes: float, class_entropy: float, num_classes: int) -> None:
        """Check and keep the two weights; raises ``ValueError`` for settings that cannot work."""
        if d_classes < 0 or class_entropy < 0:
            raise ValueError(f"d_classes and class_entropy are weights >= 0, got {d_classes} and {class_entropy}")
        if class_entropy and not d_classes:
            raise ValueError("class_entropy needs D's class head: set d_classes > 0 as well")
        if d_classes and num_classes < 2:
            raise ValueError(f"d_classes needs a dataset with at least two classes, got {num_classes}")
        self.d_classes, self.class_entropy = d_classes, class_entropy

    def bind_class_prior(self, data) -> None:
        """Keep the class shares of the training subset (:class:`~cxrgan.train.data.TrainData`). A subset of one
        class (a per-class run, ``--classes NORMAL``) has nothing for the head to tell apart: both terms then stay
        off for the run (the head is kept, untrained, so the checkpoint's layout does not depend on the data)."""
        from ..errors import CxrganError

        if self.d_classes and data.dataset.multilabel:
            raise CxrganError(f"{data.dataset.root}: model.d_classes needs one class per image; this dataset is "
                              "multi-label. Set model.d_classes=0")
        labels = torch.as_tensor(data.labels, dtype=torch.long)
        self._prior = torch.bincount(labels, minlength=self.num_classes).float() / max(len(labels), 1)

    @property
    def label_terms_on(self) -> bool:
        """Whether the class terms act: ``d_classes`` > 0 and the bound training subset holds two classes or more."""
        return bool(self.d_classes) and self._prior is not None and int((self._prior > 0).sum()) >= 2

    def discriminate_features(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits for ``inputs`` and its trunk's features of the image (what ``D.classes`` reads)."""
        raise NotImplementedError

    @property
    def metric_columns(self) -> tuple[str, ...]:
        return (("d_class_ce",) if self.d_classes else ()) + (("g_class_conf",) if self.class_entropy else ())

    def d_phase(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.label_terms_on:
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

    def class_confidence_term(self, h_fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted ``class_entropy`` term of G's loss for fakes whose trunk features are ``h_fake`` (0 when off),
        on the global batch so the class shares are those of all processes' samples together."""
        if not (self.class_entropy and self.label_terms_on):
            return h_fake.new_zeros((), dtype=torch.float32), {}
        term = losses.class_confidence(gather_rows(self.D.classes(h_fake)), self._prior)
        return self.class_entropy * term, {"g_class_conf": term.detach()}
