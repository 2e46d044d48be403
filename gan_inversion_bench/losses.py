"""The reconstruction loss every method compares its images with the targets through.

``L_i = mse_weight · mean((x_i − y_i)²) + perceptual_weight · d(x_i, y_i)`` per image i, where the
perceptual distance d is chosen by ``perceptual`` (:data:`PERCEPTUAL_TERMS`):

* ``"vgg-relu3_3"`` (default; the seeds' term, mGANprior's ``CombinationLoss``: weights 1 and 0.001,
  size 256): ``mean|φ(x_i) − φ(y_i)|`` with φ = VGG16 up to relu3_3;
* ``"vgg-image2stylegan"``: ``Σ_j mean((F_j(x_i) − F_j(y_i))²)`` over the VGG16 activations
  conv1_1, conv1_2, conv3_2 and conv4_2 (after their ReLU), each layer's squared distance divided by
  its number of elements — Image2StyleGAN's perceptual term (Abdal et al. 2019, Eq. 1, with λ_j = 1);
* ``"lpips"``: LPIPS v0.1 with the AlexNet backbone, the network of the ``lpips`` metric (pivotal
  tuning's loss). A method trained on it is scored by the same network, which favours it in the LPIPS
  column: the tables say which term each record used (its settings).

The images are resized (nearest) to ``perceptual_size`` before the network (None: their own size;
LPIPS upsamples images below 32 px bilinearly, as the metric does). The target's side is computed
once. One loss per image, so that a batch is a sum of independent problems.

Inside a restoration task (:mod:`gan_inversion_bench.tasks`) the targets are observations y = D(x)
and the loss compares D(G(·)) with them: the operator D is looked up from the targets when the loss
is built, so a method never needs to know the task.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .tasks import degradation_for

#: the perceptual distances a :class:`ReconstructionLoss` can use
PERCEPTUAL_TERMS = ("vgg-relu3_3", "vgg-image2stylegan", "lpips")
#: Image2StyleGAN's VGG16 layers
IMAGE2STYLEGAN_LAYERS = ("conv1_1", "conv1_2", "conv3_2", "conv4_2")


def check_perceptual(value: Any) -> str:
    """``value`` if it names a perceptual term, else a ``ValueError`` listing them."""
    if value not in PERCEPTUAL_TERMS:
        raise ValueError(f"perceptual must be one of {', '.join(PERCEPTUAL_TERMS)}, got {value!r}")
    term: str = value
    return term


class Distance(nn.Module):
    """A perceptual distance ``d(x, reference)`` → ``[B]``; ``reference(y)`` is y's side, computed
    once without a gradient; ``features(y)`` the same with autograd (the seeds' pattern)."""

    def features(self, y: Tensor) -> Any:
        raise NotImplementedError

    def reference(self, y: Tensor) -> Any:
        with torch.no_grad():
            return self.features(y)


class VGGL1Distance(Distance):
    """The seeds' term: ``mean|φ(x) − φ(y)|`` with φ = VGG16 up to relu3_3."""

    def __init__(self, size: int | None, device: Any):
        super().__init__()
        from .perceptual import get_vgg_features

        self.net = get_vgg_features(size, device)

    def features(self, y: Tensor) -> Tensor:
        out: Tensor = self.net(y)
        return out

    def forward(self, x: Tensor, reference: Tensor) -> Tensor:
        out: Tensor = (self.net(x) - reference).abs().flatten(1).mean(1)
        return out


class LayerDistance(Distance):
    """Image2StyleGAN's term: ``Σ_j mean((F_j(x) − F_j(y))²)`` over :data:`IMAGE2STYLEGAN_LAYERS`."""

    def __init__(self, size: int | None, device: Any):
        super().__init__()
        from .perceptual import get_vgg_layers

        self.net = get_vgg_layers(IMAGE2STYLEGAN_LAYERS, size, device)

    def features(self, y: Tensor) -> list[Tensor]:
        return list(self.net(y))

    def forward(self, x: Tensor, reference: list[Tensor]) -> Tensor:
        layers = zip(self.net(x), reference, strict=True)
        out: Tensor = sum((a - b).pow(2).flatten(1).mean(1) for a, b in layers)
        return out


class LPIPSDistance(Distance):
    """LPIPS (AlexNet, v0.1) as a differentiable loss ``[B]``."""

    def __init__(self, size: int | None, device: Any):
        super().__init__()
        from .perceptual import get_lpips

        self.size = size
        self.net = get_lpips(device)

    def _resize(self, x: Tensor) -> Tensor:
        from .metrics import LPIPS_MIN_SIZE

        if self.size is not None and self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        h, w = x.shape[-2:]
        if h < LPIPS_MIN_SIZE or w < LPIPS_MIN_SIZE:  # as the metric: AlexNet needs 32 px
            size = (max(h, LPIPS_MIN_SIZE), max(w, LPIPS_MIN_SIZE))
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def features(self, y: Tensor) -> Tensor:
        return self._resize(y)

    def forward(self, x: Tensor, reference: Tensor) -> Tensor:
        out: Tensor = self.net(self._resize(x), reference).float()
        return out


class ReconstructionLoss(nn.Module):
    """Per-image reconstruction loss against fixed targets ``[B, 3, H, W]`` in [-1, 1].

    >>> loss = ReconstructionLoss(targets, perceptual_weight=0.0)
    >>> loss(reconstructions).shape  # [B]
    """

    targets: Tensor  # a buffer (register_buffer)

    def __init__(self, targets: Tensor, *, mse_weight: float = 1.0, perceptual_weight: float = 0.001,
                 perceptual_size: int | None = 256, perceptual: str = "vgg-relu3_3"):
        super().__init__()
        self.mse_weight = float(mse_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = check_perceptual(perceptual)
        self.register_buffer("targets", targets.detach().clone(), persistent=False)
        self.degrade = degradation_for(self.targets)  # the active task's D for these rows (None: identity)
        self.distance: Distance | None = None  # (an attribute: the reference execution mode copies it)
        self.reference: Any = None
        if self.perceptual_weight:
            self.distance = perceptual_distance(perceptual, perceptual_size, targets.device)
            self.reference = self.distance.reference(self.targets)

    def forward(self, x: Tensor) -> Tensor:
        if self.degrade is not None:
            x = self.degrade(x)
        loss = self.mse_weight * (x - self.targets).pow(2).flatten(1).mean(1)  # [B]
        if self.distance is not None:
            loss = loss + self.perceptual_weight * self.distance(x, self.reference)
        return loss


def perceptual_distance(perceptual: str, size: int | None, device: Any) -> Distance:
    """The distance module of a term (also for comparing two images that both change: pivotal
    tuning's locality regulariser): ``d(x, d.reference(y))`` → ``[B]``."""
    term = check_perceptual(perceptual)
    kind = {"vgg-relu3_3": VGGL1Distance, "vgg-image2stylegan": LayerDistance}.get(term, LPIPSDistance)
    return kind(size, device)
