"""mGANprior (Gu, Shen & Zhou, CVPR 2020): many latent codes composed at an intermediate layer.

The generator is cut at split point ℓ into ``G1`` (z → features) and ``G2`` (features → image).
Each image gets ``N`` codes ``z_n`` and ``N`` channel-importance vectors ``α_n ∈ R^C``::

    x̃ = G2( Σ_n G1(z_n) ⊙ α_n / N )                      (paper eq. (2), with the official /N)
    min_{z, α}  MSE(x̃, x) + 0.001 · mean|φ(x̃) − φ(x)|      (eq. (3); φ = VGG16 relu3_3 at 256²)

``⊙`` broadcasts ``α_n`` over the spatial dimensions (channel-wise weighting).

Defaults are the official ``multi_code_inversion.py`` (seed-methods.md §3 and §11(2)): N = 30,
ℓ = 6 on PGGAN ((512, 16, 16) features), z from the generator's prior (N(0, I) on PGGAN), ``α``
initialised to 1/N and left unconstrained, one plain SGD optimiser (no momentum) with lr 1 for
both, 3000 iterations. The ``quick`` profile keeps plain SGD (lr 10): Adam converges faster but
its trajectories are chaotic on PGGAN-like generators, so a batch would no longer give each
image the result it gets alone (measurements in ``docs/methods.md``).

**The extra /N.** The official composition divides by N *in addition to* initialising α to 1/N;
the paper's eq. (2) has no /N. We keep it for parity. On PGGAN it is inert: G2 starts with
PixelNorm, so a global positive scale of the fused feature changes neither the image nor the
gradients. On generators without that invariance (DCGAN: G2 starts with a transposed conv and
a BatchNorm with fixed statistics) it matters: the initial fused feature is mean_n G1(z_n) / N,
and the optimiser has to grow α to undo the 1/N. ``docs/methods.md`` has the measurements.

**Default split.** ``split=None`` picks a per-generator default (:data:`DEFAULT_SPLITS`): 6 for
the PGGAN family (the official default); 3 (512×4×4) for ``dcgan-digiface64``, chosen by the
sweep reported in ``docs/methods.md``. Unknown generators fall back to the deepest split point whose
features are at 1/8 of the output resolution (documented heuristic).

Implementation: G1 runs once per iteration for all codes of all images (``[B·N, latent]`` →
``[B·N, C, H, W]`` → ``[B, N, C, H, W]``); the official code loops over the N codes. For
generators with a structured intermediate, G2 receives the context of each image's first code.
``execution="reference"`` runs the official pattern instead, for speed comparisons
(``docs/performance.md``): one image at a time, one G1 call per code, generator and VGG
parameters trainable, target features recomputed every iteration. Same optimisation, higher cost.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
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
    check_split_setting,
    check_targets,
    code_seeds,
    default_split,
    invert_each,
    loss_weights,
    make_optimizer,
    optimise,
    positive_float,
    positive_int,
    unfreeze,
)
from gan_inversion_bench.precision import full_precision

#: generator name (or class name) → default split point ℓ (see docs/methods.md for dcgan-digiface64)
DEFAULT_SPLITS: dict[str, int] = {"pggan": 6, "pggan-tiny": 6, "PGGAN": 6, "dcgan-digiface64": 3}


def sample_codes(G: SplitGenerator, image_seeds: Sequence[int], n: int, stream: str = "") -> Tensor:
    """``[B, n, latent]`` codes from the generator's prior; image i's rows depend only on its seed."""
    z = G.sample_latents(len(image_seeds) * n, seed=code_seeds(image_seeds, n, stream))  # [B·n, latent]
    return z.view(len(image_seeds), n, -1)


def compose(features: Tensor, alpha: Tensor, divide_by_n: bool = True) -> Tensor:
    """mGANprior's fused feature ``Σ_n F_n ⊙ α_n / N`` (the official code; without the /N, the
    paper's eq. (2)).

    ``features``: ``[B, N, C, H, W]``; ``alpha``: ``[B, N, C]`` → ``[B, C, H, W]``.
    """
    fused = (features * alpha[..., None, None]).sum(dim=1)  # [B, C, H, W]
    return fused / features.shape[1] if divide_by_n else fused


def g1_codes(G: SplitGenerator, z: Tensor, split: int) -> tuple[Any, Tensor]:
    """G1 of all codes of all images in one call.

    ``z``: ``[B, N, latent]`` → (the raw intermediate of the ``B·N`` rows, features
    ``[B, N, C, H, W]``). Row ``b·N + n`` of the intermediate is code n of image b.
    """
    b, n = z.shape[:2]
    inter = G.g1(z.reshape(b * n, -1), split)  # [B·N, …]
    feats = G.features_of(inter)  # [B·N, C, H, W]
    return inter, feats.view(b, n, *feats.shape[1:])  # [B, N, C, H, W]


@dataclass
class MGANPriorSettings:
    """Hyper-parameters; the defaults are the official code's (the ``paper`` profile)."""

    n_codes: int = 30
    split: int | str | None = None   # None: DEFAULT_SPLITS (6 on PGGAN)
    iterations: int = 3000
    optimizer: str = "sgd"           # "sgd" (no momentum) or "adam"
    lr: float = 1.0
    lr_schedule: str = "constant"    # "constant" (the official) or "cosine" (method_tools.LR_SCHEDULES)
    mse_weight: float = 1.0
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256  # None: the generator's resolution
    execution: str = "batched"       # "batched" or "reference" (the seeds' pattern; for timing)
    divide_by_n: bool = True         # the official extra /N (module docstring); False: the paper's eq. (2)
    alpha_lr: float | None = None    # learning rate of the α (None: lr, as the official single optimiser)

    def __post_init__(self) -> None:
        positive_int(self.n_codes, "n_codes")
        if not isinstance(self.divide_by_n, bool):
            raise ValueError(f"divide_by_n must be true or false, got {self.divide_by_n!r}")
        if self.alpha_lr is not None:
            positive_float(self.alpha_lr, "alpha_lr")
        check_execution(self.execution)
        check_split_setting(self.split)
        positive_int(self.iterations, "iterations")
        positive_float(self.lr, "lr")
        check_lr_schedule(self.lr_schedule)
        make_optimizer(self.optimizer, [torch.zeros(1, requires_grad=True)], 1.0)  # validates the name
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")


class MGANPrior(InversionMethod):
    """N latent codes per image, composed at layer ℓ with channel-importance vectors α_n."""

    name = "mganprior"
    version = "1"
    Settings = MGANPriorSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The embedded default run's budget (docs/methods.md, "quick profiles"): 30 codes (the paper's N,
        # and PmSFC's R·K = 6·5: equal capacity), 100 steps of the official plain SGD with lr 10,
        # perceptual term at the generator's resolution. `gib tune` tunes the optimiser on top of it.
        "quick": {"n_codes": 30, "iterations": 100, "lr": 10.0, "perceptual_size": None},
        # The conformance suite's (gan_inversion_bench.testing): fewer codes and the perceptual term at
        # 32² (on a 128² generator VGG was 9/10 of the time), to keep it fast.
        "test": {"n_codes": 10, "iterations": 8, "lr": 10.0, "perceptual_size": 32},
    }
    tags = MethodTags(uses_split=True)
    #: settings added after results were first stored: left out of result keys at these values
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {"execution": "batched", "divide_by_n": True, "alpha_lr": None,
                                                    "lr_schedule": "constant"}

    def get_tags(self) -> MethodTags:
        return replace(self.tags, per_image_execution=self.settings.execution == "reference")

    def capacity(self) -> dict[str, int]:
        return {"codes": self.settings.n_codes}

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The optimiser and its two learning rates (codes, α) and whether to keep the official /N."""
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        low, high = (0.1, 100.0) if optimizer == "sgd" else (1e-3, 0.5)
        return {"optimizer": optimizer, "lr": trial.suggest_float(f"{optimizer}_lr", low, high, log=True),
                "alpha_lr": trial.suggest_float(f"{optimizer}_alpha_lr", low / 10, high, log=True),
                "divide_by_n": trial.suggest_categorical("divide_by_n", [True, False])}

    def reference_execution(self) -> MGANPrior:
        return self.with_settings(execution="reference")

    def resolved_split(self, generator: SplitGenerator) -> int:
        """The split index this method uses on ``generator``."""
        split = self.settings.split
        return generator.resolve_split(default_split(generator, DEFAULT_SPLITS) if split is None else split)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None,
                progress: ProgressFn | None = None) -> MGANPrior:
        """Nothing is learned; records the resolved split point for the result records."""
        index = self.resolved_split(generator)
        point = generator.split_points[index]
        self.split_ = {"index": index, "name": point.name, "shape": list(point.shape)}
        return self

    def prepared_state(self) -> dict[str, Any]:
        return {"split": self.split_} if hasattr(self, "split_") else {}

    def _synthesizer(self, G: SplitGenerator, split: int, z: Tensor, alpha: Tensor) -> Callable[[], Tensor]:
        """The images of the current codes: G1 once on all codes of all images, or (reference
        execution) the seeds' loop, one G1 call per code, fused as it goes."""
        b, n = z.shape[:2]
        divide = self.settings.divide_by_n
        first_rows = torch.arange(b, device=z.device) * n  # context of each image's first code

        def synthesize() -> Tensor:
            if self.settings.execution == "reference":
                first = G.g1(z[:, 0], split)
                fused = G.features_of(first) * alpha[:, 0, :, None, None]
                for j in range(1, n):
                    fused = fused + G.features_of(G.g1(z[:, j], split)) * alpha[:, j, :, None, None]
                return G.g2(G.with_features(first, fused / n if divide else fused), split)
            inter, feats = g1_codes(G, z, split)  # feats [B, N, C, H, W]
            return G.g2(G.with_features(inter, compose(feats, alpha, divide), rows=first_rows), split)

        return synthesize

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Invert ``targets`` ``[B, 3, R, R]`` in [-1, 1]; ``seeds[i]`` alone sets image i's init.

        Returns latents ``z`` ``[B, N, latent]`` and ``alpha`` ``[B, N, C]``.
        """
        check_targets(targets, generator)
        s = self.settings
        seed_list = as_seed_list(seeds, targets.shape[0])
        reference = s.execution == "reference"
        if reference and targets.shape[0] > 1:  # the seeds: one image at a time
            return invert_each(lambda t, **kw: self.invert(generator, t, **kw), targets, seed_list, progress,
                               generator)
        G = frozen_copy(generator)
        if reference:
            unfreeze(G)
        split = self.resolved_split(G)
        device = G.device
        targets = targets.to(device)
        b, n = targets.shape[0], s.n_codes
        channels = G.split_points[split].shape[0]
        z = sample_codes(G, seed_list, n).to(device).clone().requires_grad_(True)  # [B, N, latent], prior
        alpha = torch.full((b, n, channels), 1.0 / n, device=device, requires_grad=True)  # [B, N, C]
        with full_precision(device):  # cached target features in fp32
            loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                         perceptual_size=s.perceptual_size or G.resolution)
        loss = SeedStyleLoss(loss_fn) if reference else loss_fn
        synthesize = self._synthesizer(G, split, z, alpha)
        history, failures = optimise([z, alpha], lambda: loss(synthesize().float()), optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress,
                                     lrs=None if s.alpha_lr is None else [None, s.alpha_lr], schedule=s.lr_schedule,
                                     snapshot=lambda: synthesize().float())
        with torch.no_grad():
            recon = synthesize().float()
        point = G.split_points[split]
        return InversionResult(reconstructions=recon.detach(), latents={"z": z.detach(), "alpha": alpha.detach()},
                               loss_history=history, iterations=s.iterations, failures=failures,
                               info={"split": split, "split_name": point.name, "feature_shape": list(point.shape)})
