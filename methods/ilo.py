"""Intermediate Layer Optimization (ILO; Daras, Dean, Jalal & Dimakis, ICML 2021).

The generator is a chain of layers. ILO first optimises the latent (stage 0, plain latent
optimisation), then walks successive split points k_1 < k_2 < … : at split k_j it optimises the
intermediate representation f itself, starting from what the previous stage produced there, and
keeps it within an L1 ball around that point (the paper's Algorithm 1, "ILO for one layer of the
generator", applied layer after layer)::

    stage 0:  z* = argmin_z  L(G(z))
    stage j:  c_j = G_{k_{j-1} → k_j}(f*_{j-1})          (c_1 = G1(z*, k_1): the range of the previous stage)
              f*_j = argmin_{‖f − c_j‖₁ ≤ r_j}  L(G2(f, k_j))   by projected gradient descent
    result:   G2(f*_J, k_J)

with L the toolkit's :class:`~gan_inversion_bench.losses.ReconstructionLoss`. After every step the
deviation ``f − c_j`` is projected onto the L1 ball (:func:`project_l1_ball`, the sort-based
algorithm of Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1). Intermediates that are
more than a tensor (StyleGAN2's skip image and styles, BigGAN's class vector) keep their context
from the previous stage; only the feature tensor is optimised.

Defaults (``paper`` profile). The paper's text could not be read offline, so the numbers are those of
the authors' release that the paper links (``configs/config.yaml`` of github.com/giannisdaras/ilo,
StyleGAN-2 FFHQ); they still need checking against the paper's experimental section:

* layers: the latent, then the outputs of the first three resolution blocks (4², 8², 16² on
  StyleGAN-2: 4 stages). Here: :data:`DEFAULT_SPLITS` per generator, else the deepest split point
  of each of the first three spatial resolutions (:func:`default_splits`), the same blocks;
* steps: 50, 50, 25, 25 per stage → ``iterations = 150`` split by ``stage_weights = (2, 2, 1, 1)``;
* Adam, learning rate 0.1 in every stage, with a per-stage warm-up (first 5 %) and cosine ramp-down
  (last 75 %) (``lr_ramp``). The ramp is sampled at the middle of each step ((i + ½)/n), so that no
  step has learning rate 0 (the release samples at i/n, which wastes the first step of each stage);
* the latent is kept on the sphere of its initial norm (release ``project: true``, after PULSE);
* the loss: the toolkit's MSE + 0.001 · VGG16-relu3_3 L1 (all methods share it), not the release's
  MSE + LPIPS + a W+-specific "geocross" term. The result is the last iterate (the release returns
  the iterate of lowest MSE), and each stage optimises only the feature: the release also keeps
  moving StyleGAN-2's W+ codes and noise maps in the later stages, which other generators lack.

Choices where the release is StyleGAN-specific:

* **Radii** are relative: ``r_j = radii[j] · ‖c_j‖₁`` per image, so that one value means the same
  on every generator and split (the release's absolute radii 1000, 1000, 6000 belong to StyleGAN-2
  FFHQ's activations, and its default run leaves the projection off). Default 0.25 (measured on
  dcgan-digiface64 in ``docs/methods.md``): the feature may move by a quarter of its L1 mass.
  ``inf`` switches the constraint off; 0 freezes the stage (the result is then stage 0's).
* **Feature learning rate** ``feature_lr`` (0.1, the release's) is in units of the image's mean
  |c_j| at that split: f = c_j + s·u with s = mean|c_j|, and Adam moves u. Adam's step is about its
  learning rate per coordinate whatever the gradient's scale, so this is Adam on f with learning
  rate 0.1·s; StyleGAN-2's activations are roughly O(1), DCGAN's ~0.1: one setting fits both.
* **Budget**: ``iterations`` is the total over all stages; ``with_budget(n)`` splits n by the
  weights (largest remainders; ties to the earlier stage), so the schedule's shape is kept. A stage
  that gets 0 steps keeps its starting point.

Tags: ``uses_split`` (:meth:`ILO.resolved_split` is the deepest split walked; ``prepare`` records
all of them), not deterministic (z starts from a prior sample of each image's seed).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import Tensor

from gan_inversion_bench.generator import Intermediate, SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionFailed, InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (
    as_seed_list,
    check_targets,
    code_seeds,
    loss_weights,
    make_optimizer,
    positive_float,
    positive_int,
    trace_point,
)
from gan_inversion_bench.precision import full_precision

#: how many split points the default walks after the latent (the release's three blocks)
DEFAULT_LAYERS = 3
#: generator name (or class name) → the split points walked by default (names; see default_splits)
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {
    "pggan": ("4x4.conv", "8x8.conv1", "16x16.conv1"),
    "pggan-tiny": ("4x4.conv", "8x8.conv1", "16x16.conv1"),
    "stylegan2": ("conv1", "convs.1", "convs.3"),
    "dcgan-digiface64": ("4x4.relu", "8x8.relu", "16x16.relu"),
}


def project_l1_ball(v: Tensor, radius: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` ``[B, ...]`` onto the L1 ball of radius ``radius[b]``.

    Duchi et al. (2008), Fig. 1: with u = |v| sorted in decreasing order and ρ the largest j such
    that u_j > (Σ_{i≤j} u_i − r)/j, the projection is sign(v)·max(|v| − θ, 0) with
    θ = (Σ_{i≤ρ} u_i − r)/ρ. Rows already inside the ball are returned unchanged; radius 0 gives 0
    and ``inf`` the row itself. Computed in fp32 (or the input's wider dtype).
    """
    dtype = torch.promote_types(v.dtype, torch.float32)
    flat = v.reshape(v.shape[0], -1).to(dtype)  # [B, n]
    r = radius.to(device=v.device, dtype=dtype).reshape(-1, 1)  # [B, 1]
    mag = flat.abs()
    u = mag.sort(dim=1, descending=True).values
    cumulative = u.cumsum(dim=1)  # [B, n]
    j = torch.arange(1, u.shape[1] + 1, device=v.device, dtype=dtype)
    rho = (u * j > cumulative - r).sum(dim=1, keepdim=True).clamp_min(1)  # [B, 1]; the condition holds for j ≤ ρ
    theta = ((cumulative.gather(1, rho - 1) - r) / rho).clamp_min(0)
    shrunk = flat.sign() * (mag - theta).clamp_min(0)
    inside = mag.sum(dim=1, keepdim=True) <= r
    out = torch.where(inside, flat, torch.where(r > 0, shrunk, torch.zeros_like(flat)))
    return out.reshape(v.shape).to(v.dtype)


def default_splits(generator: SplitGenerator, n: int = DEFAULT_LAYERS) -> list[int]:
    """The split points walked by default: :data:`DEFAULT_SPLITS` by registry name, then class name;
    else the deepest split point of each of the first ``n`` spatial resolutions (features
    ``[C, H, W]`` with H > 1; neither the input nor the image), i.e. the resolution blocks' outputs."""
    for key in (generator.name, type(generator).__name__):
        if key in DEFAULT_SPLITS:
            return [generator.resolve_split(name) for name in DEFAULT_SPLITS[key]]
    deepest: dict[int, int] = {}
    for p in generator.split_points[1:-1]:
        if len(p.shape) == 3 and p.shape[-1] > 1:
            deepest[p.shape[-1]] = p.index
    found = [deepest[r] for r in sorted(deepest)][:n]
    if len(found) < n:
        raise ValueError(f"ilo: generator {generator.name or type(generator).__name__} has {len(found)} spatial "
                         f"resolution(s) below its output, the default walks {n}; pass splits=[…] "
                         f"(see `gib list generators -v`)")
    return found


def stage_iterations(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` steps split in proportion to ``weights`` (largest remainders, ties to the earlier stage)."""
    exact = [Fraction(total) * Fraction(w) / sum(Fraction(x) for x in weights) for w in weights]
    steps = [math.floor(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda k: (steps[k] - exact[k], k))
    for k in order[:total - sum(steps)]:
        steps[k] += 1
    return steps


def ramp(t: float) -> float:
    """The learning-rate factor at fraction ``t`` of a stage: linear warm-up over the first 5 %,
    cosine ramp-down over the last 75 % (the release's per-stage schedule)."""
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / 0.75))
    return down * min(1.0, t / 0.05)


def advance(G: SplitGenerator, x: Intermediate, start: int, end: int) -> Intermediate:
    """The generator's stages ``start … end-1`` applied to the intermediate ``x`` at split ``start``."""
    for _, stage in list(G.stages())[start:end]:
        x = stage(x)
    return x


def _decoder(G: SplitGenerator, x: Intermediate, split: int) -> Callable[[Tensor], Tensor]:
    """Feature at ``split`` → images, with the rest of the intermediate ``x`` (its context) kept."""
    return lambda f: G.g2(G.with_features(x, f), split).float()


def _as_tuple(value: Any, what: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list, got {value!r}")
    return tuple(value)


@dataclass
class ILOSettings:
    """Hyper-parameters; the defaults are the release's (module docstring)."""

    iterations: int = 150                       # total steps over all stages (the budget)
    stage_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0)   # latent stage first; 50/50/25/25 of 150
    splits: tuple[int | str, ...] | None = None  # None: default_splits (3 layers)
    radii: tuple[float, ...] = (0.25,)          # relative L1 radius per layer (one value: every layer)
    optimizer: str = "adam"                     # "adam" or "sgd" (no momentum)
    lr: float = 0.1                             # latent stage
    feature_lr: float = 0.1                     # layer stages, in units of mean |feature|
    lr_ramp: bool = True                        # per-stage warm-up and cosine ramp-down
    sphere: bool = True                         # keep z on the sphere of its initial norm
    mse_weight: float = 1.0
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256           # None: the generator's resolution

    def __post_init__(self) -> None:
        positive_int(self.iterations, "iterations")
        self.stage_weights = _as_tuple(self.stage_weights, "stage_weights")
        self.radii = _as_tuple(self.radii, "radii")
        if self.splits is not None:
            self.splits = _as_tuple(self.splits, "splits")
            if not self.splits or any(isinstance(s, bool) or not isinstance(s, (int, str)) for s in self.splits):
                raise ValueError(f"splits must be None (per-generator default) or a non-empty list of split-point "
                                 f"names or indices, got {self.splits!r}")
        layers = DEFAULT_LAYERS if self.splits is None else len(self.splits)
        self._check_schedule(layers)
        make_optimizer(self.optimizer, [torch.zeros(1, requires_grad=True)], 1.0)  # validates the name
        positive_float(self.lr, "lr")
        positive_float(self.feature_lr, "feature_lr")
        for flag in ("lr_ramp", "sphere"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")

    def _check_schedule(self, layers: int) -> None:
        def number(x: Any) -> bool:
            return not isinstance(x, bool) and isinstance(x, (int, float)) and not math.isnan(x) and x >= 0

        if len(self.stage_weights) != layers + 1 or not all(number(w) and math.isfinite(w) for w in
                                                             self.stage_weights) or not self.stage_weights[0] > 0:
            raise ValueError(f"stage_weights must be {layers + 1} finite numbers >= 0 (the latent stage first, "
                             f"> 0, then one per split point), got {self.stage_weights!r}")
        if len(self.radii) not in (1, layers) or not all(number(r) for r in self.radii):
            raise ValueError(f"radii must be 1 or {layers} numbers >= 0 (relative L1 radii; inf: unconstrained), "
                             f"got {self.radii!r}")


class _Stages:
    """Bookkeeping across all stages: the [T, B] loss history, per-image failures (a non-finite loss
    freezes that image at its last finite iterate), progress and trace points."""

    def __init__(self, loss: ReconstructionLoss, total: int, batch: int, device: torch.device,
                 progress: ProgressFn | None):
        self.loss, self.total, self.done, self.progress = loss, total, 0, progress
        self.history: list[Tensor] = []
        self.alive = torch.ones(batch, dtype=torch.bool, device=device)
        self.bad_iteration = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros(batch, device=device)

    def failures(self) -> dict[int, str]:
        its, values = self.bad_iteration.tolist(), self.bad_value.tolist()
        return {i: f"non-finite loss ({values[i]}) at iteration {its[i]}" for i in range(len(its)) if its[i] >= 0}

    def run(self, param: Tensor, image: Callable[[], Tensor], opt: torch.optim.Optimizer,
            schedule: list[float], project: Callable[[], None]) -> None:
        """One step of ``opt`` on ``param`` ``[B, ...]`` per learning rate in ``schedule``, each
        followed by ``project()`` (in place); ``image()`` gives the current reconstructions."""
        rows = self.alive.view(-1, *([1] * (param.ndim - 1)))
        last_good = param.detach().clone()
        if self.done == 0 and schedule:
            trace_point(0, image)
        for lr in schedule:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            losses = self.loss(image()).float()  # [B]
            finite = torch.isfinite(losses.detach())
            newly_bad = self.alive & ~finite
            self.bad_iteration.copy_(torch.where(newly_bad, self.done, self.bad_iteration))
            self.bad_value.copy_(torch.where(newly_bad, losses.detach(), self.bad_value))
            self.alive.logical_and_(finite)
            self.history.append(torch.where(self.alive, losses.detach(), torch.nan))
            torch.where(self.alive, losses, torch.zeros_like(losses)).sum().backward()
            with torch.no_grad():
                last_good.copy_(torch.where(rows, param, last_good))
                opt.step()
                project()
                param.copy_(torch.where(rows, param, last_good))
            self.done += 1
            trace_point(self.done, image)
            self._report()

    def _report(self) -> None:
        if self.done % max(1, self.total // 100) and self.done != self.total:
            return
        if not bool(self.alive.any()):
            raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(self.failures().items())))
        if self.progress is not None:
            self.progress(self.done, self.total)


class ILO(InversionMethod):
    """Optimise the latent, then the features at successive split points, each in an L1 ball (ILO)."""

    name = "ilo"
    version = "1"
    Settings = ILOSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The embedded default run's budget: 100 steps split 2:2:1:1, perceptual term at the
        # generator's resolution (16× cheaper than 256² on 64² images).
        "quick": {"iterations": 100, "perceptual_size": None},
        # The conformance suite's: SGD, as Adam turns the ~1e-7 rounding differences between batch
        # sizes into visibly different trajectories on the tiny PGGAN (0.07 on [-1, 1] in 8 steps) and
        # the suite checks batch = alone; no VGG term (speed). tests/test_ilo.py covers Adam.
        "test": {"iterations": 8, "optimizer": "sgd", "lr": 10.0, "feature_lr": 10.0, "perceptual_weight": 0.0,
                 "perceptual_size": None},
    }
    budget_setting = "iterations"
    tags = MethodTags(uses_split=True)
    # in the default run: its quick budget costs about what single-code's does (same generator passes per iteration)

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The two learning rates and one radius for every layer (the release's radii are StyleGAN-2's)."""
        return {"lr": trial.suggest_float("lr", 1e-3, 0.5, log=True),
                "feature_lr": trial.suggest_float("feature_lr", 1e-3, 0.5, log=True),
                "radii": (trial.suggest_float("radius", 0.01, 4.0, log=True),)}

    def resolved_splits(self, generator: SplitGenerator) -> list[int]:
        """The split indices walked on ``generator``, strictly increasing, between the input and the image."""
        splits = self.settings.splits
        found = default_splits(generator) if splits is None else [generator.resolve_split(s) for s in splits]
        last = len(generator.split_points) - 1
        if any(not 1 <= k < last for k in found) or any(a >= b for a, b in itertools.pairwise(found)):
            raise ValueError(f"ilo: splits must be strictly increasing split points between 1 and {last - 1} "
                             f"(after the input, before the image), got {found} on generator "
                             f"{generator.name or type(generator).__name__}")
        return found

    def resolved_split(self, generator: SplitGenerator) -> int:
        """The deepest split point walked (the last stage's)."""
        return self.resolved_splits(generator)[-1]

    def unsupported(self, generator: SplitGenerator) -> str | None:
        try:
            self.resolved_splits(generator)
        except ValueError as e:
            return str(e)
        return None

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None,
                progress: ProgressFn | None = None) -> ILO:
        """Nothing is learned; records the split points walked, for the result records."""
        self.splits_ = [{"index": k, "name": generator.split_points[k].name,
                         "shape": list(generator.split_points[k].shape)} for k in self.resolved_splits(generator)]
        return self

    def prepared_state(self) -> dict[str, Any]:
        return {"splits": self.splits_} if hasattr(self, "splits_") else {}

    def _schedule(self, steps: int, lr: float) -> list[float]:
        return [lr * ramp((i + 0.5) / steps) if self.settings.lr_ramp else lr for i in range(steps)]

    def _latent_stage(self, G: SplitGenerator, z: Tensor, run: _Stages, steps: int) -> None:
        norm = z.detach().flatten(1).norm(dim=1).view(-1, *([1] * (z.ndim - 1)))  # [B, 1]

        def project() -> None:
            if self.settings.sphere:
                z.mul_(norm / z.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(norm))

        opt = make_optimizer(self.settings.optimizer, [z], self.settings.lr)
        run.run(z, lambda: G(z).float(), opt, self._schedule(steps, self.settings.lr), project)

    def _feature_stage(self, centre: Tensor, decode: Callable[[Tensor], Tensor], radius: float, run: _Stages,
                       steps: int) -> Tensor:
        """Projected descent on a split point's feature from ``centre`` ``[B, ...]`` (``decode``: feature →
        images); returns the optimised feature."""
        dims = [1] * (centre.ndim - 1)
        scale = centre.abs().flatten(1).mean(dim=1).clamp_min(1e-12).view(-1, *dims)  # [B, 1, …]: mean |c|
        r_u = radius * centre.abs().flatten(1).sum(dim=1) / scale.flatten() if radius > 0 else \
            torch.zeros(centre.shape[0], device=centre.device)  # ‖f − c‖₁ ≤ r‖c‖₁ ⇔ ‖u‖₁ ≤ r‖c‖₁/s
        u = torch.zeros_like(centre, requires_grad=True)

        def project() -> None:
            if not math.isinf(radius):
                u.copy_(project_l1_ball(u, r_u))

        opt = make_optimizer(self.settings.optimizer, [u], self.settings.feature_lr)
        run.run(u, lambda: decode(centre + scale * u), opt, self._schedule(steps, self.settings.feature_lr), project)
        return (centre + scale * u).detach()

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Invert ``targets`` ``[B, 3, R, R]`` in [-1, 1]; ``seeds[i]`` alone sets image i's initial z.

        Returns latents ``z`` ``[B, latent]`` and ``feature.<split name>`` (each stage's optimised
        feature); ``info`` has the splits walked and the steps of each stage.
        """
        check_targets(targets, generator)
        s = self.settings
        seed_list = as_seed_list(seeds, targets.shape[0])
        G = frozen_copy(generator)
        splits = self.resolved_splits(G)
        radii = s.radii * len(splits) if len(s.radii) == 1 else s.radii
        steps = stage_iterations(s.iterations, s.stage_weights)
        targets = targets.to(G.device)
        with full_precision(G.device):  # cached target features in fp32
            loss = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                      perceptual_size=s.perceptual_size or G.resolution)
        run = _Stages(loss, s.iterations, targets.shape[0], G.device, progress)
        z = G.sample_latents(len(seed_list), seed=code_seeds(seed_list, 1, "ilo")).clone().requires_grad_(True)
        self._latent_stage(G, z, run, steps[0])
        features: dict[str, Tensor] = {}
        with torch.no_grad():
            x = G.g1(z.detach(), splits[0])
        for j, split in enumerate(splits):
            if j:
                with torch.no_grad():
                    x = advance(G, x, splits[j - 1], split)
            f = self._feature_stage(G.features_of(x).detach().float(), _decoder(G, x, split), float(radii[j]), run,
                                    steps[j + 1])
            x = G.with_features(x, f)
            features[f"feature.{G.split_points[split].name}"] = f
        with torch.no_grad():
            recon = G.g2(x, splits[-1]).float()
        return InversionResult(reconstructions=recon, latents={"z": z.detach(), **features},
                               loss_history=torch.stack(run.history).cpu(), iterations=s.iterations,
                               failures=run.failures(),
                               info={"splits": [G.split_points[k].name for k in splits], "stage_iterations": steps})
