"""Image2StyleGAN (Abdal, Qin & Wonka, ICCV 2019): optimise one w per synthesis layer (W+), optionally the noise.

Each image gets its own per-layer codes ``ws`` ``[n_latent, style_dim]`` (18 × 512 at 1024², 14 × 512
at 256²), all initialised to the mean latent w̄, and minimises (paper Algorithm 1, Eq. 1)::

    L(ws) = λ_mse · mean((G(ws) − x)²) + λ_p · perceptual(G(ws), x)

with Adam. With ``optimize_noise`` the StyleGAN noise maps are per-image parameters too (the noise
optimisation of Image2StyleGAN++, Abdal et al., CVPR 2020), by default after ``ws``: that paper
finds noise optimisation stable "only ... if the optimization is done sequentially with W+ space
and not jointly" (arXiv 1911.11544v2, Sec. 1).

Defaults (the ``paper`` profile) and where they come from
-------------------------------------------------------
The numbers below are the paper's as we know them (Algorithm 1, Eqs. 1-2; they match the issue's
brief); the stored copies of the paper hold only its opening, so no page or section is given.

* ``iterations = 5000`` gradient steps (the paper: "5000 gradient descent steps", about 7 minutes
  per 1024² image on a V100).
* Adam with ``lr = 0.01``, β1 = 0.9, β2 = 0.999, ε = 1e-8 (the paper's values; also PyTorch's
  defaults for β and ε, which :func:`~gan_inversion_bench.method_tools.make_optimizer` uses).
* Start: w̄ on every layer (the paper's initialisation study: the mean latent beats a random start
  for faces; it reports a random start as better for other classes, which is not implemented).
  w̄ is the generator's ``latent_avg``: from the checkpoint, or the mean of ``mapping(z)`` over
  10 000 z samples drawn with seed 0 (estimated by the ``stylegan2`` factory, or here, on a private
  copy, when a generator carries none); ``info["w_mean"]`` records which.
* ``mse_weight = 1`` (the paper's λ_mse = 1 on the per-pixel mean squared error, its 1/N‖·‖²).
* Perceptual term ``perceptual = "vgg-image2stylegan"``: the paper's Σ_j λ_j/N_j ‖F_j(G(w)) − F_j(x)‖²
  over the VGG-16 activations conv1_1, conv1_2, conv3_2 and conv4_2 (taken after their ReLU, our
  reading), every λ_j = 1 (``perceptual_weight = 1``), computed inside
  :class:`~gan_inversion_bench.losses.ReconstructionLoss` so that a restoration task's operator
  reaches it. The images are in [-1, 1] for the MSE (the paper's pixel scale is not known to us).
  ``perceptual="vgg-relu3_3"`` (with ``perceptual_weight=0.001``) gives the toolkit's shared term.
* ``perceptual_size = 256``: the paper does not say (to our knowledge) at which size its VGG sees
  the image; 256² is the project's perceptual size (and StyleGAN2's projector's).
* ``optimize_noise = False`` as in the 2019 paper (noise stays the generator's fixed maps). When
  True, each image's maps start from the generator's own fixed maps (not a random draw) and are
  returned as ``latents["noise_<i>"]``. ``noise_schedule = "sequential"`` (Image2StyleGAN++'s
  order): the first ``iterations − round(noise_fraction · iterations)`` steps optimise ``ws`` with
  the noise fixed, the rest the noise with ``ws`` fixed (a fresh Adam at the same ``lr``, the same
  loss). ``noise_fraction = 0.5``, the same ``lr`` and loss for the noise phase are our choices: the
  stored copies of Image2StyleGAN++ give its order, not its phase lengths, rates or loss. Splitting
  one budget keeps ``iterations`` the count of gradient steps (each costs one synthesis and one
  VGG pass either way), so compute budgets and FLOP counts mean what they mean for every method.
  ``"joint"`` optimises both from the first step in one Adam (what this method did before
  2026-12-02; records of then have no ``noise_schedule`` in their key and mean it).

Tags: ``deterministic`` (the start is w̄ and, with noise, the generator's own maps: no seed enters;
``seeds`` are validated and otherwise ignored), batch-independent (Adam is elementwise and the loss
is a sum of per-image losses). Cost: one synthesis and one VGG pass (forward + backward) per image
and iteration, as single-code optimisation. ``quick`` runs 100 iterations with the paper's loss
at the generator's resolution; ``test`` 8 iterations (the conformance suite).

Style space. The method needs a generator that synthesises from per-layer codes and explicit noise
maps: ``n_latent``, ``style_dim``, ``latent_avg``, ``noise_maps()`` and ``synthesise_wplus(ws, noise)``
(StyleGAN2, ``generators/stylegan2.py``). :meth:`Image2StyleGAN.unsupported` names any other
generator and why, and ``invert`` refuses it with the same message.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss, check_perceptual
from gan_inversion_bench.method import InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (
    as_seed_list,
    check_targets,
    loss_weights,
    optimise,
    positive_float,
    positive_int,
)
from gan_inversion_bench.precision import full_precision

#: what a generator must provide to be inverted in W+ (with noise)
STYLE_SPACE = ("n_latent", "style_dim", "latent_avg", "noise_maps", "synthesise_wplus")
#: samples and seed of the w̄ estimate when a generator carries no latent_avg (as the stylegan2 factory)
MEAN_W_SAMPLES, MEAN_W_SEED = 10_000, 0
#: with ``optimize_noise``: Image2StyleGAN++'s order (ws, then the noise) or both at once
NOISE_SCHEDULES = ("sequential", "joint")


@dataclass
class Image2StyleGANSettings:
    """Hyper-parameters; the defaults are the paper's (the ``paper`` profile; module docstring)."""

    iterations: int = 5000
    lr: float = 0.01
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_size: int | None = 256   # None: the generator's resolution
    perceptual: str = "vgg-image2stylegan"  # losses.PERCEPTUAL_TERMS: the paper's four VGG16 layers
    optimize_noise: bool = False
    noise_schedule: str = "sequential"  # with optimize_noise: "sequential" (ws, then noise) or "joint"
    noise_fraction: float = 0.5  # sequential: the share of the iterations spent on the noise

    def __post_init__(self) -> None:
        positive_int(self.iterations, "iterations")
        positive_float(self.lr, "lr")
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")
        check_perceptual(self.perceptual)
        if not isinstance(self.optimize_noise, bool):
            raise ValueError(f"optimize_noise must be True or False, got {self.optimize_noise!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {', '.join(NOISE_SCHEDULES)}, got {self.noise_schedule!r}")
        if not isinstance(self.noise_fraction, (int, float)) or isinstance(self.noise_fraction, bool) \
                or not 0 < self.noise_fraction < 1:
            raise ValueError(f"noise_fraction must be a number in (0, 1), got {self.noise_fraction!r}")

    def phases(self) -> tuple[int, int]:
        """``(ws steps, noise-only steps)``: ``(iterations, 0)`` unless the noise is optimised after ``ws``."""
        if not (self.optimize_noise and self.noise_schedule == "sequential"):
            return self.iterations, 0
        noise = round(self.noise_fraction * self.iterations)
        return self.iterations - noise, noise


def _label(generator: SplitGenerator) -> str:
    return f"{generator.name or '(unnamed)'} ({type(generator).__name__})"


def mean_w_start(G: Any, batch: int) -> Tensor:
    """``[batch, n_latent, style_dim]``: w̄ on every layer of every image (a fresh leaf tensor).
    A generator whose ``latent_avg`` was never set (all zeros) gets it estimated on ``G`` (a private
    copy) from :data:`MEAN_W_SAMPLES` z samples drawn with :data:`MEAN_W_SEED`."""
    if not bool(G.latent_avg.any()) and hasattr(G, "estimate_latent_avg"):
        G.estimate_latent_avg(MEAN_W_SAMPLES, seed=MEAN_W_SEED)
    w_mean = G.latent_avg.detach().float().reshape(1, 1, G.style_dim)
    return w_mean.repeat(batch, G.n_latent, 1)  # [B, n_latent, style_dim]


class Image2StyleGAN(InversionMethod):
    """W+ optimisation (one w per synthesis layer, from w̄) with Adam, optionally with the noise maps."""

    name = "image2stylegan"
    version = "1"
    Settings = Image2StyleGANSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # the embedded default run's short budget: the paper's optimiser and loss, 100 steps, the
        # perceptual term at the generator's resolution (16× cheaper than 256² on 64² images)
        "quick": {"iterations": 100, "perceptual_size": None},
        # the conformance suite's (gan_inversion_bench.testing); the budget is set to 8 there
        "test": {"iterations": 8, "perceptual_size": None},
    }
    budget_setting = "iterations"
    tags = MethodTags(deterministic=True)
    in_default_run = False  # the default run's generator (dcgan-digiface64) has no style space
    #: added after results were stored: earlier records all used the toolkit's VGG16-relu3_3 term
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {"perceptual": "vgg-relu3_3", "noise_schedule": "joint",
                                                    "noise_fraction": 0.5}

    def unused_settings(self) -> set[str]:
        """The noise schedule without noise, the noise fraction outside the sequential schedule."""
        s = self.settings
        if not s.optimize_noise:
            return {"noise_schedule", "noise_fraction"}
        return {"noise_fraction"} if s.noise_schedule == "joint" else set()

    def unsupported(self, generator: SplitGenerator) -> str | None:
        """A reason for every generator without a style space (all but StyleGAN2), else None."""
        missing = [a for a in STYLE_SPACE if not hasattr(generator, a)]
        if not missing:
            return None
        return (f"generator {_label(generator)} has no style space: image2stylegan optimises one w per synthesis "
                f"layer (W+) and the noise maps, which only StyleGAN2 generators provide (missing: "
                f"{', '.join(missing)})")

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """Adam's learning rate (the paper's 0.01 was set for 1024² FFHQ)."""
        return {"lr": trial.suggest_float("adam_lr", 1e-3, 0.1, log=True)}

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Invert ``targets`` ``[B, 3, R, R]`` in [-1, 1]; ``latents["ws"]`` is ``[B, n_latent, style_dim]``
        (plus ``latents["noise_<i>"]`` ``[B, 1, r, r]`` with ``optimize_noise``)."""
        reason = self.unsupported(generator)
        if reason is not None:
            raise ValueError(reason)
        check_targets(targets, generator)
        s = self.settings
        as_seed_list(seeds, targets.shape[0])  # validated; the start does not depend on it (deterministic)
        G: Any = frozen_copy(generator)
        device, b = G.device, targets.shape[0]
        targets = targets.to(device)
        ws = mean_w_start(G, b).to(device).requires_grad_(True)
        noise = None
        if s.optimize_noise:  # each image's own copy of the generator's fixed maps
            noise = [m.to(device).repeat(b, 1, 1, 1).requires_grad_(True) for m in G.noise_maps()]
        with full_precision(device):  # cached target features in fp32
            loss_fn = ReconstructionLoss(targets, mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                         perceptual_size=s.perceptual_size or G.resolution, perceptual=s.perceptual)

        def synthesise() -> Tensor:
            out: Tensor = G.synthesise_wplus(ws, noise).float()
            return out

        n_ws, n_noise = s.phases()
        joint = s.optimize_noise and s.noise_schedule == "joint"
        phases = [([ws, *(noise or [])] if joint else [ws], n_ws), (noise or [], n_noise)]
        histories, failures, done = [], {}, 0
        for params, steps in phases:
            if steps == 0:
                continue
            for p in [ws, *(noise or [])]:  # the other phase's parameters are constants (no gradient)
                p.requires_grad_(any(p is q for q in params))
            history, failed = optimise(params, lambda: loss_fn(synthesise()), optimizer="adam", lr=s.lr,
                                       iterations=steps, progress=progress, snapshot=synthesise, start=done,
                                       total=s.iterations)
            histories.append(history)
            failures.update({i: why for i, why in failed.items() if i not in failures})
            done += steps
        with torch.no_grad():
            recon = synthesise()
        latents = {"ws": ws.detach()}
        latents.update({f"noise_{i}": n.detach() for i, n in enumerate(noise or [])})
        info = {"w_mean": getattr(G, "latent_avg_source", "latent_avg"), "steps": {"ws": n_ws, "noise_only": n_noise}}
        return InversionResult(reconstructions=recon, latents=latents, loss_history=torch.cat(histories),
                               iterations=s.iterations, failures=failures, info=info)
