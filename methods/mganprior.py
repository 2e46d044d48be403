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
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import (InversionMethod, InversionResult, ProgressFn, as_seed_list, check_targets,
                                        make_optimizer, optimise, positive_float, positive_int)

#: generator name (or class name) → default split point ℓ (see docs/methods.md for dcgan-digiface64)
DEFAULT_SPLITS: dict[str, int] = {"pggan": 6, "pggan-tiny": 6, "PGGAN": 6, "dcgan-digiface64": 3}


def default_split(generator: SplitGenerator, table: dict[str, int]) -> int:
    """The per-generator default split: by registry name, then class name, then a heuristic.

    The heuristic takes the deepest split point whose features are at 1/8 of the output
    resolution (at least 4×4 pixels); it is only for generators that have no entry in ``table``.
    """
    for key in (generator.name, type(generator).__name__):
        if key in table:
            return table[key]
    target = max(4, generator.resolution // 8)
    points = [p for p in generator.split_points if len(p.shape) == 3 and p.shape[1] == target]
    if not points:
        raise ValueError(f"split: no default split point for generator {generator.name or type(generator).__name__}; "
                         f"pass split=<index or name> (see `gib list generators -v`)")
    return points[-1].index


def split_settings_check(split: Any) -> None:
    if split is None or isinstance(split, str):
        return
    if isinstance(split, bool) or not isinstance(split, int) or split < 0:
        raise ValueError(f"split must be None (per-generator default), a split-point name or an index >= 0, "
                         f"got {split!r}")


def code_seeds(image_seeds: Sequence[int], n: int, stream: str = "") -> list[int]:
    """``n`` seeds per image, derived only from that image's seed (and ``stream``), image-major."""
    out = []
    for s in image_seeds:
        for k in range(n):
            digest = hashlib.blake2b(f"{int(s)}:{stream}:{k}".encode(), digest_size=8).digest()
            out.append(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return out


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

    def __post_init__(self) -> None:
        positive_int(self.n_codes, "n_codes")
        split_settings_check(self.split)
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

    def resolve_split(self, generator: SplitGenerator) -> int:
        """The split index this method uses on ``generator``."""
        split = self.settings.split
        return generator.resolve_split(default_split(generator, DEFAULT_SPLITS) if split is None else split)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None) -> "MGANPrior":
        """Nothing is learned; records the resolved split point for the result records."""
        index = self.resolve_split(generator)
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
        G = frozen_copy(generator)
        split = self.resolve_split(G)
        device = G.device
        targets = targets.to(device)
        b, n = targets.shape[0], s.n_codes
        channels = G.split_points[split].shape[0]
        seed_list = as_seed_list(seeds, b)
        z = sample_codes(G, seed_list, n).to(device).clone().requires_grad_(True)  # [B, N, latent], prior
        alpha = torch.full((b, n, channels), 1.0 / n, device=device, requires_grad=True)  # [B, N, C]
        first_rows = torch.arange(b, device=device) * n  # context of each image's first code
        loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                     perceptual_size=s.perceptual_size or G.resolution)

        def synthesize() -> Tensor:
            inter, feats = g1_codes(G, z, split)  # feats [B, N, C, H, W]
            return G.g2(G.with_features(inter, compose(feats, alpha), rows=first_rows), split)

        history, failures = optimise([z, alpha], lambda: loss_fn(synthesize()), optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress)
        with torch.no_grad():
            recon = synthesize()
        point = G.split_points[split]
        return InversionResult(reconstructions=recon.detach(), latents={"z": z.detach(), "alpha": alpha.detach()},
                               loss_history=history, iterations=s.iterations, failures=failures,
                               info={"split": split, "split_name": point.name, "feature_shape": list(point.shape)})
