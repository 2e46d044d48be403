"""Single-code optimisation: the seeds' baseline (mGANprior's ``GradientDescent``).

One latent per image, ``min_z  MSE(G(z), x) + 0.001 · L1(φ(G(z)), φ(x))`` with φ = VGG16 relu3_3
on 256² nearest-resized inputs, z initialised from N(0, I), plain SGD with learning rate 1.0
for 3000 iterations (the paper profile; seed-methods.md §2 and §11).

``execution="reference"`` runs the seeds' pattern for speed comparisons (``docs/performance.md``):
one image at a time, generator and VGG parameters trainable, target features recomputed every
iteration. The result is the same optimisation; only the cost differs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (
    SeedStyleLoss,
    as_seed_list,
    check_execution,
    check_lr_schedule,
    check_targets,
    invert_each,
    loss_weights,
    make_optimizer,
    optimise,
    per_image_normal,
    positive_float,
    positive_int,
    unfreeze,
)
from gan_inversion_bench.precision import full_precision


@dataclass
class SingleCodeSettings:
    """Hyper-parameters; the defaults are the seeds' (the ``paper`` profile)."""

    iterations: int = 3000
    optimizer: str = "sgd"          # "sgd" (no momentum) or "adam"
    lr: float = 1.0
    lr_schedule: str = "constant"   # "constant" (the seeds') or "cosine" (method_tools.LR_SCHEDULES)
    init: str = "normal"            # "normal": z ~ N(0, I); "zero": z = 0
    mse_weight: float = 1.0
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256  # None: the generator's resolution
    execution: str = "batched"      # "batched" or "reference" (the seeds' per-image pattern; for timing)

    def __post_init__(self) -> None:
        positive_int(self.iterations, "iterations")
        check_execution(self.execution)
        positive_float(self.lr, "lr")
        check_lr_schedule(self.lr_schedule)
        make_optimizer(self.optimizer, [torch.zeros(1, requires_grad=True)], 1.0)  # validates the name
        if self.init not in ("normal", "zero"):
            raise ValueError(f"init must be 'normal' or 'zero', got {self.init!r}")
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")


class SingleCode(InversionMethod):
    """Optimise one latent code per image through the full generator."""

    name = "single-code"
    version = "1"
    Settings = SingleCodeSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # A short budget for the embedded default run: perceptual term at the generator's own
        # resolution instead of 256² (16× cheaper on 64² images), fewer iterations.
        "quick": {"iterations": 100, "perceptual_size": None},
        # The conformance suite's (gan_inversion_bench.testing; the budget is set to 8 there): the
        # perceptual term at 32², so a 128² generator costs what a 32² one does (VGG was 9/10 of it).
        "test": {"iterations": 8, "perceptual_size": 32},
    }

    #: settings added after results were first stored: left out of result keys at these values
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {"execution": "batched", "lr_schedule": "constant"}

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The optimiser and its learning rate."""
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        low, high = (0.1, 100.0) if optimizer == "sgd" else (1e-3, 0.5)
        return {"optimizer": optimizer, "lr": trial.suggest_float(f"{optimizer}_lr", low, high, log=True)}

    def get_tags(self) -> MethodTags:
        """Zero initialisation makes the result independent of the seed; reference execution runs
        one image at a time (the seeds' pattern)."""
        return replace(self.tags, deterministic=self.settings.init == "zero",
                       per_image_execution=self.settings.execution == "reference")

    def reference_execution(self) -> SingleCode:
        return self.with_settings(execution="reference")

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        check_targets(targets, generator)
        s = self.settings
        seed_list = as_seed_list(seeds, targets.shape[0])
        reference = s.execution == "reference"
        if reference and targets.shape[0] > 1:
            return invert_each(lambda t, **kw: self.invert(generator, t, **kw), targets, seed_list, progress,
                               generator)
        G = frozen_copy(generator)
        if reference:
            unfreeze(G)
        device = G.device
        targets = targets.to(device)
        if s.init == "normal":
            z = per_image_normal(seed_list, (G.latent_dim,), device)
        else:
            z = torch.zeros(targets.shape[0], G.latent_dim, device=device)
        z.requires_grad_(True)
        with full_precision(device):  # cached target features in fp32
            loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                         perceptual_size=s.perceptual_size or G.resolution)
        loss = SeedStyleLoss(loss_fn) if reference else loss_fn
        history, failures = optimise([z], lambda: loss(G(z).float()), optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress, schedule=s.lr_schedule,
                                     snapshot=lambda: G(z).float())
        with torch.no_grad():
            recon = G(z).float()
        return InversionResult(reconstructions=recon.detach(), latents={"z": z.detach()}, loss_history=history,
                               iterations=s.iterations, failures=failures)
