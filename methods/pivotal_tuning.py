"""Pivotal Tuning Inversion (Roich, Mokady, Bermano & Cohen-Or, "Pivotal Tuning for Latent-based
Editing of Real Images", ACM TOG 2022; arXiv 2106.05744).

Two stages per image:

1. **Pivot** (paper §3.1): invert the target with an existing method and keep its code ``z_p``
   frozen. The paper uses W-space optimisation (the StyleGAN2 projector, 450 iterations). Here
   ``pivot_method`` names any registered single-code method (default ``single-code``), run through
   its own ``invert`` with ``pivot_profile`` / ``pivot_settings`` / ``pivot_budget``; the pivot is
   its latent ``"z"`` (the toolkit's latent space, see *Departures*).
2. **Pivotal tuning** (§3.2–3.3): fine-tune a private copy θ* of *all* generator weights, θ* = θ
   at the start, with Adam::

       L_pt = P(G(z_p; θ*), x) + λ_L2 · MSE(G(z_p; θ*), x)                        (eq. 2)
       w_r  = z_p + α · (z_r − z_p) / ‖z_r − z_p‖₂,   z_r from the generator's prior   (eq. 4)
       L_R  = P(G(w_r; θ*), G(w_r; θ)) + λ_R^L2 · MSE(G(w_r; θ*), G(w_r; θ))        (eq. 5)
       min_θ*  L_pt + λ_R · L_R                                                        (eq. 6)

   The reconstruction is G(z_p; θ*).

P is ``perceptual_weight`` times a perceptual distance (``perceptual``, losses.PERCEPTUAL_TERMS): the
paper's LPIPS (AlexNet, as the release) at the generator's resolution in the ``paper`` profile, the
toolkit's shared VGG16-relu3_3 L1 term (weight 0.001) in ``quick``/``tuned``. The target term goes
through :class:`~gan_inversion_bench.losses.ReconstructionLoss` (``mse_weight`` = λ_L2, so a
restoration task's operator reaches it); the locality term compares two generated images with the
same P and MSE (never degraded: it is about the generator, not the observation).

Defaults (the ``paper`` profile). Section and equation numbers are recollections (the stored copies
of the paper hold only its opening); every number was checked in the authors' release
(danielroich/PTI, ``configs/hyperparameters.py``):

* 350 tuning steps, Adam with lr 3e-4 (§4 implementation details; released ``max_pti_steps``,
  ``pti_learning_rate``);
* pivot: 450 iterations (§4; released ``first_inv_steps``) of ``single-code``'s paper optimiser
  (the nearest registered analogue of the W projector: one code, the whole generator);
* λ_L2 = 1 and LPIPS weight 1 (§3.2, eq. 2; released ``pt_l2_lambda``, ``pt_lpips_lambda``);
* α = 30, λ_R = 0.1, λ_R^L2 = 0.1 (§3.3 / §4; the release puts 0.1 on both regulariser terms
  directly, i.e. 0.1 on the L2 term where eqs. 5–6 as we read them give λ_R · λ_R^L2 = 0.01:
  ``locality_l2_weight=1`` gives the release's); one fresh z_r per image and step (released ``latent_ball_num_of_samples
  = 1``, ``locality_regularization_interval = 1``; the paper does not say how often z_r is drawn).
  ``locality_weight=0`` switches the regulariser off (the released flag ``use_locality_regularization``).

Departures, and choices where the paper is silent:

* the pivot and w_r live in the toolkit's latent space (the input of ``G``, z ~ N(0, I) for every
  registered family), not in StyleGAN's W; all weights are tuned (on StyleGAN2 the mapping network
  too, since z goes through it). α = 30 is kept although the scale of z differs from W's
  (‖z‖ ≈ √latent_dim); z_r is drawn without the released code's truncation ψ = 0.5 (the toolkit's
  prior has no truncation);
* LPIPS is the evaluation metric's network too, which favours this method in the LPIPS column under
  ``paper`` (its ``perceptual`` setting is stored with every record);
* no early stopping (the released code stops when LPIPS < 0.07): the budget is the step count;
* each image has its own tuned weights and its own Adam, so a batch equals each image alone: the
  pivot method runs one image at a time (Adam on the weights would amplify the last-bit differences
  of a batched pivot), and the images are tuned one after another inside every step, with
  ``torch.func.functional_call`` on one frozen copy of the generator (one module serves all images,
  and the compiled forward);
* budget: ``steps`` (``with_budget`` changes only the tuning stage). The pivot keeps its own
  budget: its cost is a fixed cost per image (the harness's FLOP model: fixed + steps · per step).

``keep_weights=True`` returns each image's tuned weights in ``latents["weights"]`` ``[B, P]``
(``parameters()`` order; :func:`tuned_generator` rebuilds that generator). The harness stores no
latents, so a ``gib run`` never keeps them; they are for library callers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call

from gan_inversion_bench.generator import SplitGenerator, conditioned, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss, check_perceptual, perceptual_distance
from gan_inversion_bench.method import InversionFailed, InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import (
    as_seed_list,
    check_targets,
    code_seeds,
    invert_each,
    loss_weights,
    positive_float,
    positive_int,
    trace_point,
    tracing,
)
from gan_inversion_bench.precision import full_precision
from gan_inversion_bench.registry import METHODS, UnknownNameError

NAME = "pivotal-tuning"
#: the stream of the locality codes z_r (distinct from every pivot method's initialisation)
LOCALITY_STREAM = "pivotal-tuning/locality"
#: largest mean |G(z) − reconstruction| for a pivot method's result to count as G(z) of its code
PIVOT_TOLERANCE = 0.02


def _non_negative(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass
class PivotalTuningSettings:
    """Hyper-parameters; the defaults are the paper's (module docstring)."""

    steps: int = 350                  # tuning steps (the budget)
    lr: float = 3e-4                  # Adam on the weights
    pivot_method: str = "single-code"  # any registered single-code method
    pivot_profile: str = "paper"
    pivot_budget: int | None = 450    # None: the pivot profile's own budget
    pivot_settings: dict[str, Any] | None = None  # overrides of the pivot profile
    mse_weight: float = 1.0           # λ_L2
    perceptual_weight: float = 1.0    # the LPIPS term's weight (1 in the paper)
    perceptual_size: int | None = None  # None: the generator's resolution
    perceptual: str = "lpips"         # losses.PERCEPTUAL_TERMS; the paper's LPIPS (AlexNet, as the release)
    locality_weight: float = 0.1      # λ_R (0: no locality regularisation)
    locality_l2_weight: float = 0.1   # λ_R^L2
    locality_alpha: float = 30.0      # α
    keep_weights: bool = False        # return the tuned weights in latents["weights"]

    def __post_init__(self) -> None:
        positive_int(self.steps, "steps")
        positive_float(self.lr, "lr")
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")
        check_perceptual(self.perceptual)
        _non_negative(self.locality_weight, "locality_weight")
        _non_negative(self.locality_l2_weight, "locality_l2_weight")
        positive_float(self.locality_alpha, "locality_alpha")
        if not isinstance(self.keep_weights, bool):
            raise ValueError(f"keep_weights must be true or false, got {self.keep_weights!r}")
        build_pivot(self)  # validates pivot_method, pivot_profile, pivot_settings, pivot_budget


def build_pivot(s: PivotalTuningSettings) -> InversionMethod:
    """The pivot method instance that ``s`` describes; ``ValueError`` naming the setting otherwise."""
    valid = [n for n in METHODS.names() if n != NAME]
    if s.pivot_method not in valid:
        raise ValueError(f"pivot_method: {UnknownNameError('method', str(s.pivot_method), valid)}")
    cls = METHODS.get(s.pivot_method)
    if s.pivot_settings is not None and not isinstance(s.pivot_settings, dict):
        raise ValueError(f"pivot_settings must be a mapping of {s.pivot_method} settings or None, "
                         f"got {s.pivot_settings!r}")
    try:
        pivot: InversionMethod = cls.from_profile(s.pivot_profile, **(s.pivot_settings or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"pivot_profile / pivot_settings for pivot_method {s.pivot_method!r}: {e}") from e
    if s.pivot_budget is not None:
        positive_int(s.pivot_budget, "pivot_budget")
        if pivot.budget_setting is None:
            raise ValueError(f"pivot_budget: pivot_method {s.pivot_method!r} has no compute budget; set it to None")
        pivot = pivot.with_budget(s.pivot_budget)
    reason = _unsuitable(pivot)
    if reason is not None:
        raise ValueError(f"pivot_method {s.pivot_method!r} cannot give a pivot: {reason}; use a single-code "
                         f"method such as 'single-code'")
    return pivot


def _unsuitable(pivot: InversionMethod) -> str | None:
    tags = pivot.get_tags()
    if tags.trains_generator:
        return "it tunes the generator itself"
    if tags.needs_prepare:
        return "it needs a prepare stage"
    if tags.uses_split or pivot.capacity().get("codes", 1) != 1:
        return "its result is not one code per image (it composes several codes or works at a split)"
    return None


def locality_code(pivot: Tensor, random: Tensor, alpha: float) -> Tensor:
    """Paper eq. 4: ``pivot + alpha · (random − pivot) / ‖random − pivot‖₂`` per row ``[N, latent]``."""
    direction = random - pivot
    return pivot + alpha * direction / direction.norm(dim=1, keepdim=True)


def locality_distance(tuned: Tensor, original: Tensor, s: PivotalTuningSettings, distance: Any) -> Tensor:
    """λ_R · (P + λ_R^L2 · MSE) between ``G(w_r; θ*)`` and ``G(w_r; θ)`` (eqs. 5–6) → ``[N]``.

    ``distance``: P as a two-image distance (``losses.perceptual_distance``; None when
    ``perceptual_weight`` is 0)."""
    out = s.locality_l2_weight * (tuned - original).pow(2).flatten(1).mean(1)  # [N]
    if distance is not None:
        out = out + s.perceptual_weight * distance(tuned, distance.reference(original))
    return s.locality_weight * out


def tuned_generator(generator: SplitGenerator, weights: Tensor) -> SplitGenerator:
    """A frozen copy of ``generator`` carrying one image's tuned weights (a row ``[P]`` of
    ``latents["weights"]``)."""
    G = frozen_copy(generator)
    params = list(G.parameters())
    torch.nn.utils.vector_to_parameters(weights.to(device=params[0].device, dtype=params[0].dtype), params)
    return G


class _Tuning:
    """The tuning stage of one ``invert`` call: per-image weights θ*_i, their Adam states, the last
    iterate with a finite loss, and the per-image losses."""

    def __init__(self, G: SplitGenerator, targets: Tensor, pivot: Tensor, codes: Tensor,
                 s: PivotalTuningSettings):
        self.G, self.pivot, self.codes, self.s = G, pivot, codes, s  # codes: [B, steps, latent] (z_r)
        b = targets.shape[0]
        self.classes = G.conditions  # [B, condition_dim] or None
        self.weights = [{n: p.detach().clone().requires_grad_(True) for n, p in G.named_parameters()}
                        for _ in range(b)]
        self.good = [{n: w.detach().clone() for n, w in ws.items()} for ws in self.weights]
        self.optims = [torch.optim.Adam(list(ws.values()), lr=s.lr) for ws in self.weights]
        size = s.perceptual_size or G.resolution
        with full_precision(G.device):  # cached target features in fp32
            self.losses = [ReconstructionLoss(targets[i:i + 1], mse_weight=s.mse_weight, perceptual=s.perceptual,
                                              perceptual_weight=s.perceptual_weight, perceptual_size=size)
                           for i in range(b)]
        self.distance = None
        if s.perceptual_weight and s.locality_weight:
            self.distance = perceptual_distance(s.perceptual, size, G.device)
        self.alive = [True] * b
        self.failures: dict[int, str] = {}
        self.history: list[Tensor] = []
        self.locality: list[Tensor] = []

    def _class(self, i: int) -> Tensor | None:
        return None if self.classes is None else self.classes[i:i + 1]

    def _losses(self, i: int, t: int) -> tuple[Tensor, Tensor]:
        """Image i at step t: the target loss at G(z_p; θ*_i) and the locality term, both ``[1]``."""
        z = self.pivot[i:i + 1]  # [1, latent]
        with conditioned(self.G, self._class(i)):
            if not self.s.locality_weight:
                x = functional_call(self.G, self.weights[i], (z,)).float()
                return self.losses[i](x), torch.zeros(1, device=x.device)
            w_r = locality_code(z, self.codes[i, t:t + 1], self.s.locality_alpha)  # [1, latent]
            x = functional_call(self.G, self.weights[i], (torch.cat([z, w_r]),)).float()  # [2, 3, R, R]
            with torch.no_grad():
                original = self.G(w_r).float()  # the caller's weights θ (G is their frozen copy)
            return self.losses[i](x[:1]), locality_distance(x[1:], original, self.s, self.distance)

    def step(self, t: int) -> None:
        """One Adam step on every image still alive; records the losses before the step."""
        rows, local = [], []
        nan = torch.full((1,), float("nan"), device=self.pivot.device)
        for i in range(len(self.weights)):
            if not self.alive[i]:
                rows.append(nan)
                local.append(nan)
                continue
            rec, reg = self._losses(i, t)
            total = rec + reg
            if not bool(torch.isfinite(total).all()):
                self._fail(i, t, float(total.detach()[0]))
                rows.append(nan)
                local.append(nan)
                continue
            self.optims[i].zero_grad(set_to_none=True)
            total.sum().backward()
            with torch.no_grad():
                for n, w in self.weights[i].items():
                    self.good[i][n].copy_(w)
            self.optims[i].step()
            # bf16 autocast caches its casts of leaf weights until the harness's autocast context ends
            # (after the whole invert); without this the forward would keep using the step-0 weights.
            torch.clear_autocast_cache()
            rows.append(rec.detach())
            local.append(reg.detach())
        self.history.append(torch.cat(rows))
        self.locality.append(torch.cat(local))
        if not any(self.alive):
            raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(self.failures.items())))

    def _fail(self, i: int, t: int, value: float) -> None:
        """Non-finite loss: back to the last weights whose loss was finite, and no further steps."""
        self.alive[i] = False
        self.failures[i] = f"non-finite tuning loss ({value}) at step {t}"
        with torch.no_grad():
            for n, w in self.weights[i].items():
                w.copy_(self.good[i][n])

    @torch.no_grad()
    def images(self) -> Tensor:
        """G(z_p; θ*_i) for every image ``[B, 3, R, R]``."""
        out = []
        for i, ws in enumerate(self.weights):
            with conditioned(self.G, self._class(i)):
                out.append(functional_call(self.G, ws, (self.pivot[i:i + 1],)).float())
        return torch.cat(out)

    def flat_weights(self) -> Tensor:
        """``[B, P]``: each image's tuned weights in ``parameters()`` order."""
        return torch.stack([torch.cat([w.detach().flatten() for w in ws.values()]) for ws in self.weights])


class PivotalTuning(InversionMethod):
    """A pivot code from another method, then per-image fine-tuning of a private copy of the weights."""

    name = NAME
    version = "1"
    Settings = PivotalTuningSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The default run's budget: single-code's quick pivot (100 iterations) and 20 tuning steps (one
        # step costs about four single-code iterations), perceptual terms at the generator's resolution.
        # Its loss is the toolkit's shared term (as every method's quick profile), not the paper's LPIPS.
        "quick": {"steps": 20, "pivot_profile": "quick", "pivot_budget": None, "perceptual": "vgg-relu3_3",
                  "perceptual_weight": 0.001},
        # The conformance suite's (it sets the tuning budget), kept cheap: a 2-iteration pivot, pixel
        # losses only, no locality term (tests/test_pivotal_tuning.py checks that term).
        "test": {"steps": 8, "pivot_profile": "quick", "pivot_budget": 2, "pivot_settings": {"perceptual_weight": 0.0},
                 "perceptual_weight": 0.0, "locality_weight": 0.0},
    }
    budget_setting = "steps"
    tags = MethodTags(trains_generator=True)
    in_default_run = False  # tuned for dcgan-digiface64, but it would lengthen the default run (README)
    #: added after results were stored: earlier records all used the VGG term
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {"perceptual": "vgg-relu3_3"}

    def pivot_method(self) -> InversionMethod:
        """The pivot stage's method instance (rebuilt from the settings)."""
        return build_pivot(self.settings)

    def get_tags(self) -> MethodTags:
        """Deterministic only when the pivot is and no random z_r is drawn; batch independence is the pivot's
        (the tuning itself is per image)."""
        pivot = self.pivot_method().get_tags()
        return replace(self.tags, deterministic=pivot.deterministic and not self.settings.locality_weight,
                       batch_independent=pivot.batch_independent)

    def unsupported(self, generator: SplitGenerator) -> str | None:
        if not any(p.numel() for p in generator.parameters()):
            return "the generator has no weights to tune"
        reason = self.pivot_method().unsupported(generator)
        return None if reason is None else f"pivot method {self.settings.pivot_method}: {reason}"

    def capacity(self) -> dict[str, int]:
        """One code per image, plus one tuned copy of the generator's weights per image."""
        return {"codes": 1, "tuned_generators": 1}

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The tuning learning rate (its scale depends on the generator's weights)."""
        return {"lr": trial.suggest_float("lr", 3e-5, 3e-3, log=True)}

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        check_targets(targets, generator)
        s = self.settings
        seed_list = as_seed_list(seeds, targets.shape[0])
        G = frozen_copy(generator)
        pivot, pivot_result = self._pivot(generator, G, targets, seed_list, progress)
        targets = targets.to(G.device)
        codes = G.sample_latents(len(seed_list) * s.steps, seed=code_seeds(seed_list, s.steps, LOCALITY_STREAM))
        tuning = _Tuning(G, targets, pivot.to(G.device), codes.view(len(seed_list), s.steps, -1), s)
        done = len(seed_list) * pivot_result.iterations  # the pivot stage's progress units
        trace_point(0, tuning.images)
        for t in range(s.steps):
            tuning.step(t)
            trace_point(t + 1, tuning.images)
            if progress is not None:
                progress(done + t + 1, done + s.steps)
        latents = {"z": pivot.detach()}
        if s.keep_weights:
            latents["weights"] = tuning.flat_weights()
        info = {"pivot": {"method": s.pivot_method, "settings": self.pivot_method().get_settings(),
                          "iterations": pivot_result.iterations},
                "locality_history": torch.stack(tuning.locality).cpu()}  # [T, B]: λ_R · L_R before each step
        failures = {**{i: f"pivot: {r}" for i, r in pivot_result.failures.items()}, **tuning.failures}
        return InversionResult(tuning.images(), latents, torch.stack(tuning.history).cpu(), s.steps, failures, info)

    def _pivot(self, generator: SplitGenerator, G: SplitGenerator, targets: Tensor, seeds: list[int],
               progress: ProgressFn | None) -> tuple[Tensor, InversionResult]:
        """Stage 1: the pivot method's own ``invert`` on the caller's ``generator``; its code ``"z"``
        ``[B, latent]``, checked against ``G`` (a frozen copy) to be the code whose G(z) is its
        reconstruction."""
        method = self.pivot_method()

        def pivot_progress(done: int, n: int) -> None:  # n: the pivot stage's total (all images)
            if progress is not None:
                progress(done, n + self.settings.steps)

        # One image at a time: Adam on the weights amplifies the last-bit differences between a batched
        # and a single-image pivot, so only an identical pivot keeps a batch equal to each image alone.
        with tracing(lambda iteration, snapshot: None):  # the quality trace is the tuning stage's
            result = invert_each(lambda t, **kw: method.invert(generator, t, **kw), targets, seeds,
                                 pivot_progress, generator)
        z = result.latents.get("z")
        b, name = targets.shape[0], self.settings.pivot_method
        if z is None or tuple(z.shape) != (b, generator.latent_dim):
            found = {k: list(v.shape) for k, v in result.latents.items()}
            raise ValueError(f"pivot_method {name!r} gave latents {found}; pivotal tuning needs one code 'z' of "
                             f"shape [B, {generator.latent_dim}] per image (e.g. pivot_method='single-code')")
        with torch.no_grad():
            again = G(z.to(G.device)).float()
        rows = torch.isfinite(z).all(dim=1)
        gap = (again[rows] - result.reconstructions.to(again)[rows]).abs().mean() if rows.any() else again.new_zeros(())
        if not float(gap) <= PIVOT_TOLERANCE:
            raise ValueError(f"pivot_method {name!r}: its reconstructions are not G(z) of its code 'z' (mean "
                             f"|difference| {float(gap):.3g}); pivotal tuning needs a method whose result is G(z)")
        return z.detach(), result
