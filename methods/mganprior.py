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

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (SeedStyleLoss, as_seed_list, check_execution, check_split_setting,
                                              check_targets, code_seeds, default_split, invert_each, make_optimizer,
                                              optimise, positive_float, positive_int, unfreeze)
from gan_inversion_bench.precision import full_precision

#: generator name (or class name) → default split point ℓ (see docs/methods.md for dcgan-digiface64)
DEFAULT_SPLITS: dict[str, int] = {"pggan": 6, "pggan-tiny": 6, "PGGAN": 6, "dcgan-digiface64": 3}


def sample_codes(G: SplitGenerator, image_seeds: Sequence[int], n: int, stream: str = "") -> Tensor:
    """``[B, n, latent]`` codes from the generator's prior; image i's rows depend only on its seed."""
    z = G.sample_latents(len(image_seeds) * n, seed=code_seeds(image_seeds, n, stream))  # [B·n, latent]
    return z.view(len(image_seeds), n, -1)


def compose(features: Tensor, alpha: Tensor) -> Tensor:
    """mGANprior's fused feature ``Σ_n F_n ⊙ α_n / N``.

    ``features``: ``[B, N, C, H, W]``; ``alpha``: ``[B, N, C]`` → ``[B, C, H, W]``.
    """
    n = features.shape[1]
    return (features * alpha[..., None, None]).sum(dim=1) / n  # [B, C, H, W]


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
    mse_weight: float = 1.0
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256  # None: the generator's resolution
    execution: str = "batched"       # "batched" or "reference" (the seeds' pattern; for timing)

    def __post_init__(self) -> None:
        positive_int(self.n_codes, "n_codes")
        check_execution(self.execution)
        check_split_setting(self.split)
        positive_int(self.iterations, "iterations")
        positive_float(self.lr, "lr")
        make_optimizer(self.optimizer, [torch.zeros(1, requires_grad=True)], 1.0)  # validates the name
        if self.mse_weight < 0 or self.perceptual_weight < 0 or self.mse_weight + self.perceptual_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0, got "
                             f"mse_weight={self.mse_weight}, perceptual_weight={self.perceptual_weight}")
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")


class MGANPrior(InversionMethod):
    """N latent codes per image, composed at layer ℓ with channel-importance vectors α_n."""

    name = "mganprior"
    version = "1"
    Settings = MGANPriorSettings
    PROFILES = {
        "paper": {},
        # The embedded default run's budget (docs/methods.md, "quick profiles"): 10 codes, 100
        # steps of the official plain SGD with lr 10, perceptual term at the generator's resolution.
        "quick": {"n_codes": 10, "iterations": 100, "lr": 10.0, "perceptual_size": None},
    }
    tags = MethodTags(uses_split=True)

    def get_tags(self) -> MethodTags:
        return replace(self.tags, per_image_execution=self.settings.execution == "reference")

    def reference_execution(self) -> "MGANPrior":
        return self._replaced(execution="reference")

    def resolved_split(self, generator: SplitGenerator) -> int:
        """The split index this method uses on ``generator``."""
        split = self.settings.split
        return generator.resolve_split(default_split(generator, DEFAULT_SPLITS) if split is None else split)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None) -> "MGANPrior":
        """Nothing is learned; records the resolved split point for the result records."""
        index = self.resolved_split(generator)
        point = generator.split_points[index]
        self.split_ = {"index": index, "name": point.name, "shape": list(point.shape)}
        return self

    def prepared_state(self) -> dict[str, Any]:
        return {"split": self.split_} if hasattr(self, "split_") else {}

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
        first_rows = torch.arange(b, device=device) * n  # context of each image's first code
        with full_precision(device):  # cached target features in fp32
            loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                         perceptual_size=s.perceptual_size or G.resolution)
        loss = SeedStyleLoss(loss_fn) if reference else loss_fn

        def synthesize() -> Tensor:
            if reference:  # the seeds' loop: one G1 call per code, fused as it goes
                first = G.g1(z[:, 0], split)
                fused = G.features_of(first) * alpha[:, 0, :, None, None]
                for j in range(1, n):
                    fused = fused + G.features_of(G.g1(z[:, j], split)) * alpha[:, j, :, None, None]
                return G.g2(G.with_features(first, fused / n), split)
            inter, feats = g1_codes(G, z, split)  # feats [B, N, C, H, W]
            return G.g2(G.with_features(inter, compose(feats, alpha), rows=first_rows), split)

        history, failures = optimise([z, alpha], lambda: loss(synthesize().float()), optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress)
        with torch.no_grad():
            recon = synthesize().float()
        point = G.split_points[split]
        return InversionResult(reconstructions=recon.detach(), latents={"z": z.detach(), "alpha": alpha.detach()},
                               loss_history=history, iterations=s.iterations, failures=failures,
                               info={"split": split, "split_name": point.name, "feature_shape": list(point.shape)})
