"""The reconstruction loss the seeds use: pixel MSE plus a VGG16-relu3_3 perceptual L1 term.

``L_i = mse_weight · mean((x_i − y_i)²) + perceptual_weight · mean|φ(x_i) − φ(y_i)|`` per image i,
with φ = VGG16 up to relu3_3 on inputs nearest-resized to ``perceptual_size`` (mGANprior's
``CombinationLoss``: weights 1 and 0.001, size 256). The target features are computed once.
Returns one loss per image so that a batch is a sum of independent problems.

Inside a restoration task (:mod:`gan_inversion_bench.tasks`) the targets are observations y = D(x)
and the loss compares D(G(·)) with them: the operator D is looked up from the targets when the loss
is built, so a method never needs to know the task.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .tasks import degradation_for


class ReconstructionLoss(nn.Module):
    """Per-image reconstruction loss against fixed targets ``[B, 3, H, W]`` in [-1, 1].

    >>> loss = ReconstructionLoss(targets, perceptual_weight=0.0)
    >>> loss(reconstructions).shape  # [B]
    """

    targets: Tensor  # buffers (register_buffer)
    target_features: Tensor

    def __init__(self, targets: Tensor, *, mse_weight: float = 1.0, perceptual_weight: float = 0.001,
                 perceptual_size: int | None = 256):
        super().__init__()
        self.mse_weight = float(mse_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.register_buffer("targets", targets.detach().clone(), persistent=False)
        self.degrade = degradation_for(self.targets)  # the active task's D for these rows (None: identity)
        self.vgg = None
        if self.perceptual_weight:
            from .perceptual import get_vgg_features

            self.vgg = get_vgg_features(perceptual_size, targets.device)
            with torch.no_grad():
                self.register_buffer("target_features", self.vgg(self.targets), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.degrade is not None:
            x = self.degrade(x)
        loss = self.mse_weight * (x - self.targets).pow(2).flatten(1).mean(1)  # [B]
        if self.vgg is not None:
            diff = (self.vgg(x) - self.target_features).abs().flatten(1).mean(1)  # [B]
            loss = loss + self.perceptual_weight * diff
        return loss
