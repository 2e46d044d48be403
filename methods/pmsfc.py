"""PmSFC (Li et al., AAAI 2021): prior multi-subspace feature composition.

Two stages, both at a split point ℓ (G1: z → features ``[C, H, W]``, G2: features → image).

**Stage 1, subspace discovery** (:meth:`PmSFC.prepare`; paper eqs. (4)-(6), Algorithm 1;
seed-methods.md §4). A self-expressive layer ``S`` (C×C, no bias, no nonlinearity, diagonal masked to zero in
every use: ``S̃ = S ⊙ (1 − I)``) rebuilds every channel from the others. With ``F`` = G1(z) flattened
channel-major to ``[C, B·H·W]`` (each channel is one data point)::

    L_recF = mean (F − S̃F)²                          (4)  over B·C·H·W
    L_recD = mean (G2(F) − G2(T(S̃F)))²              (5)  over B·3·R·R, T = un-flatten
    L      = L_recF + λ · L_recD + μ · mean|S̃|        (6)  (mean over all C² entries, as the code)

Row i of ``S`` holds the coefficients of channel i (the official orientation; the paper's ``F(z) = F(z)S``
with channels as *columns* is the transpose). Fresh prior latents every iteration, Adam, ``S`` initialised to
the constant 1e-4. The affinity is the paper's ``A = (|S̃| + |S̃ᵀ|)/2`` (``affinity="paper"``), or the official
code's post-processing (``affinity="official"``; thresholding, rank-(d·R+1) SVD, power; :func:`official_affinity`).
Spectral clustering (Ng-Jordan-Weiss, scikit-learn, seeded) splits the C channels into R
subspaces; labels are renumbered by decreasing cluster size, and ``masks_[r]`` is the binary
indicator ``m_r ∈ {0, 1}^C``; they partition the channels. ``S``, the loss curves and the masks are
cached (``cache_dir``, default ``$GIB_CACHE``), keyed by the generator's weights, the code version, the
split point, the discovery settings and the seed; ``s_matrix`` imports an official ``value50.pkl`` instead.

**Stage 2, inversion** (:meth:`PmSFC.invert`), ``variant``:

* ``"paper"`` (eqs. (7)-(9)): K codes ``z_k^r`` per subspace, each with a per-channel weighting
  vector ``w_k^r ∈ R^C``; ``f^r = Σ_k (m^r ⊙ G1(z_k^r)) ⊙ tanh(w_k^r) / Σ_k tanh(w_k^r)``,
  ``f = Σ_r f^r`` (masks select channels in place, so the sum *is* the re-ordering of (8)),
  ``x̂ = G2(f)``, loss MSE + 0.001·VGG16-relu3_3 L1 as mGANprior. The denominator is guarded:
  ``|Σ_k tanh(w)| ≥ denominator_eps`` with its sign kept (sign(0) := +).
* ``"released"`` (what ``PmSFC.py`` computes, seed-methods.md §5.1): one zero-initialised code per subspace
  (``codes_per_subspace`` of them, summed) plus one unmasked base code, ``f = Σ_r G1(z_r) ⊙ m_r + G1(z_base)``,
  loss ``0.01·MSE(G2(f), x) + MSE(G2(G1(z_base)), x)``, Adam lr 1e-4, 20 000 iterations; image ``G2(f)``.

Settings left at ``None`` take the variant's defaults (:data:`VARIANT_DEFAULTS`), so stored settings are
always concrete. ``docs/methods.md`` explains every default and its measurements.

Both variants run G1 once per iteration on all codes of all images. ``execution="reference"`` runs the official
pattern instead, for speed comparisons (``docs/performance.md``): one image at a time, one G1 call per code (and,
released, separate G2 calls for the composite and the base), generator and VGG parameters trainable, target
features recomputed every iteration.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, conditioned, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import Artifact, InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (
    SeedStyleLoss,
    as_seed_list,
    check_execution,
    check_lr_schedule,
    check_split_setting,
    check_targets,
    folder_artifacts,
    invert_each,
    make_optimizer,
    optimise,
    positive_float,
    positive_int,
    unfreeze,
)
from gan_inversion_bench.method_tools import code_seeds as _code_seeds
from gan_inversion_bench.method_tools import default_split as _default_split
from gan_inversion_bench.precision import full_precision

from .pmsfc_subspaces import AFFINITIES, ORIENTATIONS, cluster_channels, digest, masks_from_labels, obtain_s

#: generator name (or class name) → default split point ℓ (docs/methods.md for dcgan-digiface64)
DEFAULT_SPLITS: dict[str, int] = {"pggan": 3, "pggan-tiny": 3, "PGGAN": 3, "dcgan-digiface64": 3}

#: stage-2 defaults that depend on the variant (filled in for settings left at None)
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    # K = 5 gives R·K = 30 codes, mGANprior's N: the same G1 budget per iteration. SGD lr 1 and
    # 3000 iterations are mGANprior's (the paper compares with mGANprior "in our configuration").
    "paper": {"codes_per_subspace": 5, "iterations": 3000, "optimizer": "sgd", "lr": 1.0, "init": "normal"},
    # PmSFC.py: --code_per_cluster 1, README 20 000 iterations, Adam lr 1e-4, --init_type Zeros
    "released": {"codes_per_subspace": 1, "iterations": 20000, "optimizer": "adam", "lr": 1e-4, "init": "zero"},
}


# ---- stage 2: compositions ---------------------------------------------------------------------

def safe_denominator(d: Tensor, eps: float) -> Tensor:
    """``d`` with ``|d| ≥ eps``, sign kept (sign(0) := +): guards eq. (7)'s Σ_k tanh(w_k)."""
    return torch.where(d >= 0, d.clamp(min=eps), d.clamp(max=-eps))


def compose_paper(features: Tensor, w: Tensor, masks: Tensor, eps: float) -> Tensor:
    """Eqs. (7)-(8): ``Σ_r [Σ_k (m_r ⊙ F_k^r) ⊙ tanh(w_k^r)] / Σ_k tanh(w_k^r)``.

    ``features``: ``[B, R, K, C, H, W]``; ``w``: ``[B, R, K, C]``; ``masks``: ``[R, C]`` (0/1)
    → ``[B, C, H, W]``. Entries of ``w`` outside a subspace's mask have no effect.
    """
    t = torch.tanh(w)  # [B, R, K, C]
    m = masks.to(features.dtype)[None, :, None, :, None, None]  # [1, R, 1, C, 1, 1]
    numerator = (features * m * t[..., None, None]).sum(dim=2)  # [B, R, C, H, W]
    denominator = safe_denominator(t.sum(dim=2), eps)  # [B, R, C]
    return (numerator / denominator[..., None, None]).sum(dim=1)  # [B, C, H, W]


def compose_released(features: Tensor, base: Tensor, masks: Tensor) -> Tensor:
    """``PmSFC.py``: ``Σ_r Σ_p G1(z_{r,p}) ⊙ m_r + G1(z_base)``.

    ``features``: ``[B, R, P, C, H, W]``; ``base``: ``[B, C, H, W]``; ``masks``: ``[R, C]``.
    """
    m = masks.to(features.dtype)[None, :, None, :, None, None]  # [1, R, 1, C, 1, 1]
    return (features * m).sum(dim=(1, 2)) + base  # [B, C, H, W]


def default_split(generator: SplitGenerator) -> int:
    """PmSFC's default split on ``generator`` (:data:`DEFAULT_SPLITS`, else the 1/8-resolution heuristic)."""
    return _default_split(generator, DEFAULT_SPLITS)


def zero_init_problem(G: SplitGenerator, split: int) -> str | None:
    """What goes wrong when all codes start at z = 0 (the released init), or ``None``.

    ``"stuck"``: z = 0 receives exactly zero gradient through G2(G1(z)) (a dead point: every ReLU
    off), so zero-initialised codes never move. ``"non-finite"``: the gradient at z = 0 is NaN,
    infinite, or so large that its square overflows float32 (Adam's second moment becomes inf and
    every step 0): a PGGAN with zero biases (its own random initialisation) maps z = 0 to all-zero
    features, where each PixelNorm multiplies the gradient by rsqrt(1e-8) = 1e4. Trained weights
    have neither problem. Probed with the loss against a grey image.
    """
    z = torch.zeros(1, G.latent_dim, device=G.device, requires_grad=True)
    first = None if G.conditions is None else G.conditions[:1]  # one row: the first image's class
    with torch.enable_grad(), conditioned(G, first):
        (G.g2(G.g1(z, split), split).float() - 0.5).pow(2).mean().backward()
    grad = z.grad
    assert grad is not None  # backward() filled it
    if not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) > 1e18:
        return "non-finite"
    return "stuck" if bool(grad.abs().max() == 0) else None


def zero_codes_are_stuck(G: SplitGenerator, split: int) -> bool:
    """True if z = 0 receives exactly zero gradient through G2(G1(z)) (the zero init cannot move)."""
    return zero_init_problem(G, split) == "stuck"


def code_seeds(image_seeds: Sequence[int], n: int, stream: str) -> list[int]:
    """``n`` seeds per image derived only from that image's seed and ``stream``; image-major."""
    return _code_seeds(image_seeds, n, f"pmsfc-{stream}")


# ---- settings ------------------------------------------------------------------------------------

@dataclass
class PmSFCSettings:
    """Hyper-parameters. ``None`` stage-2 values take :data:`VARIANT_DEFAULTS` of ``variant``."""

    variant: str = "paper"                 # "paper" (eqs. (7)-(9)) or "released" (PmSFC.py)
    split: int | str | None = None         # None: DEFAULT_SPLITS (ℓ = 3 on PGGAN)
    n_subspaces: int = 6                   # R
    # stage 2
    codes_per_subspace: int | None = None  # K (paper 5, released 1)
    iterations: int | None = None          # paper 3000, released 20 000
    optimizer: str | None = None           # paper "sgd", released "adam"
    lr: float | None = None                # paper 1.0, released 1e-4
    lr_schedule: str = "constant"          # both: "constant" (as released) or "cosine" (method_tools.LR_SCHEDULES)
    init: str | None = None                # codes: "normal" (prior) or "zero"; paper normal, released zero
    weight_init: float = 1.0               # paper: every w starts here, w0 (docs/methods.md: sweep 0.1 … 2)
    weight_lr: float | None = None         # paper: the learning rate of the w (None: lr, one optimiser)
    denominator_eps: float = 1e-3          # paper: |Σ_k tanh(w_k)| ≥ eps
    mse_weight: float = 1.0                # paper loss (9)
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256      # None: the generator's resolution
    composite_weight: float = 0.01         # released loss: composite_weight·MSE(G2(f)) + base_weight·MSE(base)
    base_weight: float = 1.0
    execution: str = "batched"             # "batched" or "reference" (the seeds' pattern; for timing)
    # stage 1
    s_matrix: str | None = None            # path of an official value50.pkl; replaces training
    discovery_iterations: int = 10000
    discovery_batch: int = 4
    discovery_optimizer: str = "adam"
    discovery_lr: float = 1e-4
    data_weight: float = 1.0               # λ of eq. (6)
    sparsity_weight: float = 1.0           # μ of eq. (6)
    s_init: float = 1e-4
    affinity: str = "paper"                # "paper": (|S̃|+|S̃ᵀ|)/2, or "official" post-processing
    official_orientation: str = "inversion"  # official only: "inversion" (PmSFC.py) or "discovery"
    threshold_ratio: float = 0.2           # official only
    subspace_dim: int = 6                  # official only: d, SVD rank d·R + 1
    affinity_power: float = 2.0            # official only (README 2; argparse default 3)
    partition: str = "discovered"          # "random": channels shuffled into subspaces of the discovered sizes
                                           # (seeded), the control that tests whether the subspaces matter;
                                           # "random:N" draws the shuffle from seed N instead of the run's

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_DEFAULTS:
            raise ValueError(f"variant must be one of {sorted(VARIANT_DEFAULTS)}, got {self.variant!r}")
        check_execution(self.execution)
        for key, value in VARIANT_DEFAULTS[self.variant].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        check_split_setting(self.split)
        for name in ("n_subspaces", "codes_per_subspace", "iterations", "discovery_iterations", "discovery_batch",
                     "subspace_dim"):
            positive_int(getattr(self, name), name)
        for name in ("lr", "discovery_lr", "denominator_eps", "threshold_ratio", "affinity_power", "s_init",
                     *(("weight_lr",) if self.weight_lr is not None else ())):  # weight_lr None: the codes' lr
            positive_float(getattr(self, name), name)
        if self.threshold_ratio > 1:
            raise ValueError(f"threshold_ratio must be in (0, 1], got {self.threshold_ratio}")
        for name in ("optimizer", "discovery_optimizer"):
            try:
                make_optimizer(getattr(self, name), [torch.zeros(1, requires_grad=True)], 1.0)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        if self.init not in ("normal", "zero"):
            raise ValueError(f"init must be 'normal' or 'zero', got {self.init!r}")
        check_lr_schedule(self.lr_schedule)
        if self.affinity not in AFFINITIES:
            raise ValueError(f"affinity must be one of {AFFINITIES}, got {self.affinity!r}")
        if self.partition not in ("discovered", "random") and not re.fullmatch(r"random:\d{1,9}", str(self.partition)):
            raise ValueError(f"partition must be 'discovered', 'random' or 'random:N' (N a seed): {self.partition!r}")
        if self.official_orientation not in ORIENTATIONS:
            raise ValueError(f"official_orientation must be one of {ORIENTATIONS}, got {self.official_orientation!r}")
        if not math.isfinite(self.weight_init):
            raise ValueError(f"weight_init must be finite, got {self.weight_init!r}")
        for name in ("mse_weight", "perceptual_weight", "composite_weight", "base_weight", "data_weight",
                     "sparsity_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.variant == "paper":
            if self.mse_weight + self.perceptual_weight == 0:
                raise ValueError("mse_weight and perceptual_weight must not both be 0")
            if math.tanh(self.weight_init) <= 0:
                raise ValueError(f"weight_init must be > 0 (equal positive weights keep Σ tanh(w) away from 0), "
                                 f"got {self.weight_init}")
        elif self.composite_weight + self.base_weight == 0:
            raise ValueError("composite_weight and base_weight must not both be 0")
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")
        if self.s_matrix is not None and not isinstance(self.s_matrix, str):
            raise ValueError(f"s_matrix must be a path string or None, got {self.s_matrix!r}")


class PmSFC(InversionMethod):
    """Subspace discovery with a self-expressive layer, then per-subspace multi-code composition."""

    name = "pmsfc"
    version = "1"
    Settings = PmSFCSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The embedded default run's budget (docs/methods.md, "quick profiles"): 100 steps of
        # SGD lr 10, perceptual term at the generator's resolution, 500 discovery steps at lr 1e-3.
        "quick": {"iterations": 100, "optimizer": "sgd", "lr": 10.0, "perceptual_size": None,
                  "discovery_iterations": 500, "discovery_lr": 1e-3},
        # The conformance suite's (gan_inversion_bench.testing): a short discovery, and SGD lr 1,
        # stable on every tiny generator (lr 10 makes the paper variant's mixing weights w grow
        # to 1e7 within 8 steps on the tiny StyleGAN2: loss 0.76 → 4e4; docs/methods.md); VGG at 32².
        "test": {"iterations": 8, "optimizer": "sgd", "lr": 1.0, "perceptual_size": 32,
                 "discovery_iterations": 25, "discovery_lr": 1e-3},
    }
    tags = MethodTags(uses_split=True, needs_prepare=True)
    #: ``gib discover``: stage 1 alone, with figures (methods/pmsfc_discover.py)
    commands: ClassVar[dict[str, str]] = {"discover": "gan_inversion_bench.methods.pmsfc_discover:discover_command"}

    #: settings added after results were first stored: left out of result keys at these values
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {"execution": "batched", "weight_lr": None,
                                                    "partition": "discovered", "lr_schedule": "constant"}
    PREPARED_IDENTITY = ("split", "affinity", "cluster_sizes", "masks_sha256")  # the rest: how discovery ran

    def capacity(self) -> dict[str, int]:
        """R·K codes (paper) or R·P + 1 (released: one base code besides the subspace codes)."""
        s = self.settings
        r, k = s.n_subspaces, s.codes_per_subspace
        codes = r * k if s.variant == "paper" else r * k + 1
        return {"codes": codes, "subspaces": r, "codes_per_subspace": k}

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """Paper variant: the optimiser, its learning rates (codes, mixing weights w) and the initial
        weight w0 the paper does not give. Released variant: Adam's learning rate."""
        if self.settings.variant == "released":
            return {"lr": trial.suggest_float("adam_lr", 1e-4, 0.5, log=True)}
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        low, high = (0.1, 100.0) if optimizer == "sgd" else (1e-3, 0.5)
        return {"optimizer": optimizer, "lr": trial.suggest_float(f"{optimizer}_lr", low, high, log=True),
                "weight_lr": trial.suggest_float(f"{optimizer}_weight_lr", low / 10, high, log=True),
                "weight_init": trial.suggest_float("weight_init", 0.1, 2.0, log=True)}

    def get_tags(self) -> MethodTags:
        """The released variant's zero initialisation makes the result independent of the seed;
        reference execution runs one image at a time (the seeds' pattern)."""
        return replace(self.tags, deterministic=self.settings.init == "zero",
                       per_image_execution=self.settings.execution == "reference")

    def reference_execution(self) -> PmSFC:
        return self.with_settings(execution="reference")

    @classmethod
    def report_artifacts(cls, run_dir: Path) -> list[Artifact]:
        """The figures ``gib discover --out RUN_DIR/discover`` wrote into the run folder."""
        captions = {"subspace_swap.png": "subspace swap (paper Fig. 6): row r replaces subspace r's features",
                    "S_by_cluster.png": "|S| with channels grouped by subspace",
                    "loss_curves.png": "the terms of eq. (6) during subspace discovery"}
        return folder_artifacts(run_dir, "discover", captions)

    # ---- stage 1 ----
    def resolved_split(self, generator: SplitGenerator) -> int:
        split = self.settings.split
        return generator.resolve_split(default_split(generator) if split is None else split)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None,
                progress: ProgressFn | None = None) -> PmSFC:
        """Discover (or import, or load from the cache) S and the R channel masks for ``generator``.

        Sets ``S_`` (raw ``[C, C]``), ``labels_`` ``[C]``, ``masks_`` ``[R, C]`` bool,
        ``loss_curves_`` (lists per term; empty for an imported S), ``split_``, ``cache_key_``
        and ``from_cache_``. Never modifies ``generator``.
        """
        s = self.settings
        G = frozen_copy(generator)
        split = self.resolved_split(G)
        point = G.split_points[split]
        channels = point.shape[0]
        if s.n_subspaces > channels:
            raise ValueError(f"n_subspaces ({s.n_subspaces}) exceeds the {channels} channels at split {split} "
                             f"({point.name}) of {G.name or type(G).__name__}")
        if cache_dir is None and os.environ.get("GIB_CACHE"):
            cache_dir = os.environ["GIB_CACHE"]
        cache = Path(cache_dir).expanduser() if cache_dir is not None else None
        if cache is not None and cache.exists() and not cache.is_dir():
            raise ValueError(f"pmsfc: the cache folder {cache} (cache_dir or $GIB_CACHE) is a file; expected a folder "
                             f"(or a path that does not exist yet)")
        found = obtain_s(G, split, s, seed=seed, cache=cache, progress=progress)
        clusters = cluster_channels(found.S, found.key, s, seed=seed, cache=cache)
        self.S_, self.loss_curves_, self.cache_key_, self.from_cache_ = found.S, found.curves, found.key, found.cached
        self.labels_, self.clustering_notes_, self.masks_key_ = clusters.labels, clusters.notes, clusters.key
        if s.partition.startswith("random"):  # the same subspace sizes, channels assigned at random (seeded)
            draw = seed if s.partition == "random" else int(s.partition.split(":")[1])
            shuffle = torch.randperm(len(self.labels_), generator=torch.Generator().manual_seed(draw))
            self.labels_ = self.labels_[shuffle]
        self.masks_ = masks_from_labels(self.labels_, s.n_subspaces)
        self.split_: dict[str, Any] = {"index": split, "name": point.name, "shape": list(point.shape)}
        self.s_source_ = f"imported {Path(s.s_matrix).resolve()}" if s.s_matrix is not None else "trained"
        self.prepared_for_ = digest({"generator": generator.describe(), "split": split})
        return self

    def affinity_name(self) -> str:
        s = self.settings
        return "paper" if s.affinity == "paper" else f"official-{s.official_orientation}"

    def prepared_state(self) -> dict[str, Any]:
        """JSON-able summary stored with every result (identical whether trained or cached)."""
        if not hasattr(self, "masks_"):
            return {}
        final, masks = {k: v[-1] for k, v in self.loss_curves_.items() if v}, self.masks_.to("cpu", torch.uint8)
        return {"split": self.split_, "cluster_sizes": self.masks_.sum(1).tolist(), "affinity": self.affinity_name(),
                "cache_key": self.cache_key_, "masks_key": self.masks_key_, "s_source": self.s_source_,
                "masks_sha256": hashlib.sha256(masks.numpy().tobytes()).hexdigest()[:20],
                "discovery_iterations": len(self.loss_curves_.get("total", [])), "final_losses": final,
                "clustering_warnings": self.clustering_notes_}

    # ---- stage 2 ----
    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Invert ``targets`` ``[B, 3, R, R]`` in [-1, 1] with the masks found by :meth:`prepare`.

        Latents: paper ``z`` ``[B, R, K, latent]``, ``w`` ``[B, R, K, C]``; released ``z``
        ``[B, R, P, latent]``, ``z_base`` ``[B, latent]``.
        """
        check_targets(targets, generator)
        seed_list = as_seed_list(seeds, targets.shape[0])
        reference = self.settings.execution == "reference"
        if reference and targets.shape[0] > 1:  # the seeds: one image at a time
            return invert_each(lambda t, **kw: self.invert(generator, t, **kw), targets, seed_list, progress,
                               generator)
        G = frozen_copy(generator)
        if reference:
            unfreeze(G)
        split = self.resolved_split(G)
        if getattr(self, "prepared_for_", None) != digest({"generator": generator.describe(), "split": split}):
            raise ValueError(f"pmsfc: call prepare(generator) with this generator before invert (the channel masks "
                             f"come from stage 1, subspace discovery, at split {split})")
        device = G.device
        targets = targets.detach().to(device)
        run = self._invert_paper if self.settings.variant == "paper" else self._invert_released
        return run(G, split, targets, seed_list, self.masks_.to(device), progress)

    def _codes(self, G: SplitGenerator, seed_list: list[int], n: int, stream: str) -> Tensor:
        """``[B, n, latent]`` initial codes: prior samples (per image, per code) or zeros."""
        b = len(seed_list)
        if self.settings.init == "zero":
            return torch.zeros(b, n, G.latent_dim, device=G.device)
        return G.sample_latents(b * n, seed=code_seeds(seed_list, n, stream)).view(b, n, -1).to(G.device)

    @staticmethod
    def _leaf(t: Tensor) -> Tensor:
        """A fresh contiguous leaf (never a view: the optimiser loop writes parameters in place)."""
        return t.detach().clone().contiguous().requires_grad_(True)

    def _invert_paper(self, G: SplitGenerator, split: int, targets: Tensor, seed_list: list[int], masks: Tensor,
                      progress: ProgressFn | None) -> InversionResult:
        s = self.settings
        b, r, k = targets.shape[0], s.n_subspaces, s.codes_per_subspace
        z = self._leaf(self._codes(G, seed_list, r * k, "codes").view(b, r, k, -1))  # [B, R, K, latent]
        w = torch.full((b, r, k, masks.shape[1]), float(s.weight_init), device=G.device, requires_grad=True)
        with full_precision(G.device):  # cached target features in fp32
            loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                         perceptual_size=s.perceptual_size or G.resolution)
        loss = SeedStyleLoss(loss_fn) if s.execution == "reference" else loss_fn
        synthesize = self._paper_synthesizer(G, split, z, w, masks)
        history, failures = optimise([z, w], lambda: loss(synthesize().float()), optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress,
                                     lrs=None if s.weight_lr is None else [None, s.weight_lr], schedule=s.lr_schedule,
                                     snapshot=lambda: synthesize().float())
        with torch.no_grad():
            recon = synthesize().float()
        return InversionResult(recon.detach(), {"z": z.detach(), "w": w.detach()}, history, s.iterations, failures,
                               info=self._info(split))

    def _paper_synthesizer(self, G: SplitGenerator, split: int, z: Tensor, w: Tensor,
                           masks: Tensor) -> Callable[[], Tensor]:
        """Eqs. (7)-(8): G1 once on all codes of all images (or, reference execution, once per code)."""
        b, r, k = z.shape[:3]
        eps, reference = self.settings.denominator_eps, self.settings.execution == "reference"
        first_rows = torch.arange(b, device=z.device) * (r * k)

        def synthesize() -> Tensor:
            if reference:  # the seeds' pattern: one G1 call per code
                inters = [G.g1(z[:, i // k, i % k], split) for i in range(r * k)]
                feats = torch.stack([G.features_of(x) for x in inters], 1)  # [B, R·K, C, H, W]
                feats = feats.view(b, r, k, *feats.shape[2:])
                return G.g2(G.with_features(inters[0], compose_paper(feats, w, masks, eps)), split)
            inter = G.g1(z.reshape(b * r * k, -1), split)  # all codes of all images in one call
            feats = G.features_of(inter)
            feats = feats.view(b, r, k, *feats.shape[1:])  # [B, R, K, C, H, W]
            return G.g2(G.with_features(inter, compose_paper(feats, w, masks, eps), rows=first_rows), split)

        return synthesize

    def _check_zero_init(self, G: SplitGenerator, split: int) -> None:
        problem = zero_init_problem(G, split) if self.settings.init == "zero" else None
        name = G.name or type(G).__name__
        if problem == "non-finite":
            raise ValueError(f"pmsfc (released): the gradient at z = 0 is not finite (or overflows the optimiser) on "
                             f"{name} at split {split} (G1(0) is all zeros, e.g. a randomly initialised PGGAN with "
                             f"zero biases, where PixelNorm's gradient overflows), so init='zero' cannot optimise; "
                             f"use init='normal' for this generator")
        if problem == "stuck":
            warnings.warn(f"pmsfc (released): z = 0 gets no gradient on {name} at split {split} "
                          f"(G1(0) is a dead point, e.g. every ReLU off), so zero-initialised codes never move; "
                          f"the zero init relies on PGGAN's PixelNorm. Use init='normal' for this generator.",
                          stacklevel=1)

    def _invert_released(self, G: SplitGenerator, split: int, targets: Tensor, seed_list: list[int],
                         masks: Tensor, progress: ProgressFn | None) -> InversionResult:
        s = self.settings
        b, r, p = targets.shape[0], s.n_subspaces, s.codes_per_subspace
        self._check_zero_init(G, split)
        z = self._leaf(self._codes(G, seed_list, r * p, "codes").view(b, r, p, -1))  # [B, R, P, latent]
        z_base = self._leaf(self._codes(G, seed_list, 1, "base")[:, 0])  # [B, latent]
        synthesize = self._released_synthesizer(G, split, z, z_base, masks)

        def per_image_loss() -> Tensor:
            images = synthesize()
            err = (images - torch.cat([targets, targets])).pow(2).flatten(1).mean(1)  # [2B]
            return s.composite_weight * err[:b] + s.base_weight * err[b:]

        history, failures = optimise([z, z_base], per_image_loss, optimizer=s.optimizer, lr=s.lr,
                                     iterations=s.iterations, progress=progress, schedule=s.lr_schedule,
                                     snapshot=lambda: synthesize()[:b])
        with torch.no_grad():
            images = synthesize()
        info = self._info(split)
        info["base_reconstructions"] = images[b:].detach()
        return InversionResult(images[:b].detach(), {"z": z.detach(), "z_base": z_base.detach()}, history,
                               s.iterations, failures, info=info)

    def _released_synthesizer(self, G: SplitGenerator, split: int, z: Tensor, z_base: Tensor,
                              masks: Tensor) -> Callable[[], Tensor]:
        """``PmSFC.py``: ``[G2(Σ_r Σ_p G1(z_rp) ⊙ m_r + G1(z_base)); G2(G1(z_base))]``, ``[2B, 3, R, R]``."""
        b, r, p = z.shape[:3]
        n = r * p + 1  # the subspace codes, then the base code
        rows = torch.cat([torch.arange(b, device=z.device) * n, torch.arange(b, device=z.device) * n + n - 1])
        reference = self.settings.execution == "reference"

        def synthesize() -> Tensor:
            if reference:  # PmSFC.py: one G1 call per code, G2 once for the composite and once for the base
                inters = [G.g1(z[:, i // p, i % p], split) for i in range(r * p)]
                base_inter = G.g1(z_base, split)
                base = G.features_of(base_inter)
                feats = torch.stack([G.features_of(x) for x in inters], 1).view(b, r, p, *base.shape[1:])
                f = compose_released(feats, base, masks)
                return torch.cat([G.g2(G.with_features(inters[0], f), split), G.g2(base_inter, split)]).float()
            codes = torch.cat([z.reshape(b, r * p, -1), z_base[:, None]], dim=1)  # [B, R·P + 1, latent]
            inter = G.g1(codes.reshape(b * n, -1), split)
            feats = G.features_of(inter)
            feats = feats.view(b, n, *feats.shape[1:])  # [B, R·P + 1, C, H, W]
            base = feats[:, -1]  # [B, C, H, W]
            f = compose_released(feats[:, :-1].reshape(b, r, p, *base.shape[1:]), base, masks)
            return G.g2(G.with_features(inter, torch.cat([f, base]), rows=rows), split).float()  # [2B, 3, R, R]

        return synthesize

    def _info(self, split: int) -> dict[str, Any]:
        return {"split": split, "variant": self.settings.variant, "cluster_sizes": self.masks_.sum(1).tolist(),
                "affinity": self.affinity_name()}


__all__ = ["DEFAULT_SPLITS", "VARIANT_DEFAULTS", "PmSFC", "PmSFCSettings", "compose_paper", "compose_released",
           "safe_denominator", "zero_codes_are_stuck", "zero_init_problem"]
