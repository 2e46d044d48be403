"""CMA-ES over the latent: the gradient-free baseline.

One covariance matrix adaptation evolution strategy per image searches the latent space of the
generator for ``min_z L(G(z), x)``, the toolkit's reconstruction loss (pixel MSE plus
``0.001 ·`` VGG16-relu3_3 L1, :class:`~gan_inversion_bench.losses.ReconstructionLoss`), using
loss values only: no gradient, no autograd graph (everything runs under ``torch.no_grad``).
The strategy itself is the ``cma`` library's ``CMAEvolutionStrategy`` (N. Hansen's reference
implementation); this file chooses its start, its population and its budget, and evaluates it.

Defaults (the ``paper`` profile), from N. Hansen, "The CMA Evolution Strategy: A Tutorial"
(arXiv:1604.00772, 2016):

* population ``λ = 4 + ⌊3 ln n⌋`` for an ``n``-dimensional latent (Table 1, "Default Strategy
  Parameters", Appendix A): 12 for n = 16, 17 for n = 100 (the DCGANs), 22 for n = 512 (PGGAN,
  StyleGAN2's z), 30-31 for StyleGAN2's W+ (7168, 9216); μ = ⌊λ/2⌋, the recombination weights
  and every learning rate are Table 1's, as the library sets them;
* initial mean and step size are "problem dependent": the optimum "should presumably be within
  the initial cube m ± 3σ" (Appendix A, footnote to the initialisation). The latent's prior says
  where the optimum is, so ``m⁽⁰⁾`` = the prior's mean and ``σ⁽⁰⁾`` = the prior's scale, both
  measured from the generator's own sampler (:func:`prior_moments`: the per-coordinate mean of
  seeded draws, and the root mean per-coordinate variance to two significant digits). For
  N(0, I): m⁽⁰⁾ = 0 (to ±0.02 per coordinate; ``init="zero"`` makes it exact) and σ⁽⁰⁾ = 1, so
  the first generation is a set of prior samples and m ± 3σ holds 99.7 % of every coordinate's
  prior mass; BigGAN-deep's normal truncated to [−2, 2] times 0.4: 0 and 0.35; StyleGAN2's W+:
  w̄ on every layer (0 would be off the prior there). ``C⁽⁰⁾ = I``. The ``sigma0`` setting is
  σ⁽⁰⁾ in these units (default 1), so one value means the same on every generator.
* Chosen here (the tutorial has no budget and no loss): the budget is ``generations`` = 350,
  the compute of the seeds' 3000 gradient steps on the 100-dim DCGANs (a step is a forward and
  a backward to the input, ≈ 2 forwards with frozen weights; a generation is λ = 17 forwards:
  3000 · 2 / 17 ≈ 350; the harness counts 29.5 GFLOP per generation and 3.47 per single-code
  step on ``dcgan-digiface64``, quick); the loss is the one every other method of the toolkit
  minimises, so that a comparison measures the optimiser, not the objective.
  ``init="sample"`` starts from a per-image prior sample instead (seeded by the image's seed):
  not the default, because a mean at the prior's mean with σ⁽⁰⁾ = the prior's scale *is* the
  prior, while a sample as mean searches N(z₀, σ²I), off-centre with twice the prior's variance.
* Covariance: full up to n = 1024 (:data:`FULL_COVARIANCE_MAX`), diagonal above (sep-CMA-ES,
  the library's ``CMA_diagonal``; R. Ros and N. Hansen, "A Simple Modification in CMA-ES
  Achieving Linear Time and Space Complexity", PPSN 2008): a full matrix is n² doubles per image
  (680 MB at n = 9216) with O(n³) eigendecompositions, which the budget could never use anyway.

Budget: ``generations``, not function evaluations. One generation is one "iteration" of the
harness: one generator forward over ``B·λ`` rows, so ``--iterations``, FLOPs per iteration
(``with_budget(2) − with_budget(1)``) and the quality traces count whole generations, and a
budget of 1 is a valid run (an evaluation budget below λ is not). Evaluations = generations · λ.

Cost: per image and generation λ generator forwards and λ VGG forwards (at ``perceptual_size``),
no backward, plus the library's O(λ n²) sampling and O(n³) eigendecompositions (lazy, every few
generations; about 20 ms per image and generation at n = 512 on a loaded CPU core). That is
λ / 2 ≈ 8-11 gradient steps of compute per generation. CMA-ES is slow on 100-512-dim latents: the
covariance learns at rates ``c₁ ≈ 2/n²`` and ``c_μ ≈ 2 (μ_eff − 7/4 + 1/μ_eff) / n²`` (Table 1), a
time scale ``1 / (c₁ + c_μ)`` of 1.1·10³ generations at n = 100 and 2.2·10⁴ at n = 512 (the library's,
tested), beyond any benchmark budget, so within one it works as a (μ/μ_w, λ)-ES with cumulative step-size
adaptation. It is here as the no-gradient reference, not as a competitive method.

Batches: one strategy per image, each sampling from its own ``numpy`` generator seeded from
that image's seed only (:func:`make_strategy`; numpy's global generator is never touched), so
image i's search does not depend on the other images. Each generation asks every strategy
for λ candidates, stacks them image-major (row ``b·λ + k`` is candidate k of image b, the
toolkit's row convention, which also gives each row its image's class vector on conditional
generators, :meth:`~gan_inversion_bench.generator.SplitGenerator.condition_rows`), runs ONE
generator forward, computes per-row losses against ``targets.repeat_interleave(λ, 0)`` and
tells each strategy its λ losses. Batched and alone agree up to the float rounding of the
batched forward (a ranking tie within rounding could let them part; not seen in the tests).

Result: the best latent seen per image (not the last mean) and its reconstruction;
``loss_history[t, b]`` is image b's best loss up to and including generation t (monotone
non-increasing). Non-finite losses rank last; an image whose whole population is non-finite
stops (a failure; it keeps its best so far). An image whose strategy meets one of the library's
own termination criteria (``tolx``, ``tolfun``, flat fitness, ...; defaults kept) stops
searching: its rows are then its best latent and it keeps its best loss (``info["stopped"]``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionFailed, InversionMethod, InversionResult, ProgressFn
from gan_inversion_bench.method_tools import (
    as_seed_list,
    check_targets,
    code_seeds,
    loss_weights,
    positive_float,
    positive_int,
    trace_point,
)
from gan_inversion_bench.precision import full_precision, mark_step

if TYPE_CHECKING:  # imported where used (make_strategy)
    import cma  # type: ignore[import-untyped]  # ships no type information

INITS = ("mean", "zero", "sample")
COVARIANCES = ("auto", "full", "diagonal")
#: the largest latent dimension that gets a full covariance matrix under ``covariance="auto"``
FULL_COVARIANCE_MAX = 1024
#: prior draws for :func:`prior_moments`: at least 2048 rows (mean to ±0.022 prior scales per
#: coordinate) and 2¹⁸ numbers (scale to ±0.14 %)
PRIOR_ROWS, PRIOR_NUMBERS = 2048, 2**18


def default_popsize(n: int) -> int:
    """The tutorial's population size ``λ = 4 + ⌊3 ln n⌋`` (Table 1) for an ``n``-dim search space."""
    return 4 + math.floor(3 * math.log(n))


def prior_moments(G: SplitGenerator) -> tuple[np.ndarray, float]:
    """``G``'s latent prior from seeded draws of ``G.sample_latents`` (seed 0): its per-coordinate
    mean ``[n]`` and its scale, the root mean per-coordinate variance to two significant digits
    (1.0 for N(0, I), 0.35 for BigGAN-deep's truncated normal at truncation 0.4)."""
    rows = max(PRIOR_ROWS, math.ceil(PRIOR_NUMBERS / G.latent_dim))
    z = G.sample_latents(rows, seed=0, device="cpu").double()  # [rows, n]
    var, mean = torch.var_mean(z, dim=0)  # [n], [n]
    return mean.numpy(), float(f"{var.mean().sqrt().item():.2g}")


def make_strategy(mean: np.ndarray, sigma0: float, popsize: int, diagonal: bool,
                  seed: int) -> cma.CMAEvolutionStrategy:
    """A ``cma.CMAEvolutionStrategy`` at ``mean`` with step ``sigma0``, the library's defaults but
    for ``popsize`` and a ``diagonal`` covariance (sep-CMA-ES) if asked, sampling from its own
    ``numpy`` generator seeded with ``seed`` (numpy's global generator stays untouched), silent,
    writing no files, without an iteration limit of its own (the caller's budget counts)."""
    import cma  # here, not at the top: it imports scipy.stats and matplotlib, which `gib --help` (it lists every
    # method's commands) and a run of other methods do not need

    rng = np.random.default_rng(seed)

    def randn(*shape: int) -> np.ndarray:  # the library calls randn(λ, n)
        return rng.standard_normal(shape)

    options = {"popsize": popsize, "CMA_diagonal": diagonal, "seed": np.nan, "randn": randn, "maxiter": np.inf,
               "maxfevals": np.inf, "verbose": -9, "verb_disp": 0, "verb_log": 0, "signals_filename": ""}
    return cma.CMAEvolutionStrategy(mean, sigma0, options)


class Strategies:
    """One CMA-ES per image, stepped together: :meth:`ask` stacks every image's candidates
    image-major, :meth:`tell` hands each image its losses and keeps its best so far."""

    def __init__(self, means: np.ndarray, sigma0: float, popsize: int, diagonal: bool, seeds: Sequence[int]):
        self.popsize = popsize
        self.strategies = [make_strategy(m, sigma0, popsize, diagonal, s) for m, s in zip(means, seeds, strict=True)]
        self.best = means.copy()                    # [B, n]; the start until a finite loss is seen
        self.best_loss = np.full(len(means), np.inf)  # [B]
        self.active = np.ones(len(means), dtype=bool)
        self.failures: dict[int, str] = {}
        self.stopped: dict[int, str] = {}
        self._asked: list[list[np.ndarray]] = []

    def ask(self) -> np.ndarray:
        """``[B·λ, n]`` candidates, image-major; an image that stopped repeats its best latent."""
        self._asked = [es.ask() if on else [] for es, on in zip(self.strategies, self.active, strict=True)]
        rows = [np.asarray(x) if on else np.repeat(self.best[i:i + 1], self.popsize, 0)
                for i, (x, on) in enumerate(zip(self._asked, self.active, strict=True))]
        return np.concatenate(rows)

    def tell(self, losses: np.ndarray, generation: int) -> None:
        """``losses`` ``[B, λ]`` of the last :meth:`ask`; non-finite ones rank last."""
        for i in np.flatnonzero(self.active):
            f = np.where(np.isfinite(losses[i]), losses[i], np.inf)
            if not np.isfinite(f).any():
                self.failures[int(i)] = f"non-finite loss ({losses[i][0]}) for the whole population at " \
                                        f"generation {generation}"
                self.active[i] = False
                continue
            k = int(np.argmin(f))
            if f[k] < self.best_loss[i]:
                self.best_loss[i], self.best[i] = f[k], self._asked[i][k]
            es = self.strategies[i]
            es.tell(self._asked[i], f.tolist())
            stop = es.stop()
            if stop:
                self.stopped[int(i)] = f"generation {generation}: {dict(stop)}"
                self.active[i] = False

    def best_losses(self) -> np.ndarray:
        """``[B]`` best loss so far (NaN for an image without a finite loss yet)."""
        return np.where(np.isfinite(self.best_loss), self.best_loss, np.nan)


@dataclass
class CMAESSettings:
    """Hyper-parameters; the defaults are the tutorial's and the toolkit's loss (module docstring)."""

    generations: int = 350            # the compute budget (budget_setting)
    popsize: int | None = None        # λ; None: 4 + ⌊3 ln n⌋ (Table 1)
    sigma0: float = 1.0               # σ⁽⁰⁾ in units of the prior's scale (prior_moments)
    init: str = "mean"                # the initial mean: "mean" (the prior's), "zero" or "sample" (a prior sample)
    covariance: str = "auto"          # "full", "diagonal" (sep-CMA-ES) or "auto" (full up to n = 1024)
    mse_weight: float = 1.0
    perceptual_weight: float = 0.001
    perceptual_size: int | None = 256  # None: the generator's resolution

    def __post_init__(self) -> None:
        positive_int(self.generations, "generations")
        if self.popsize is not None and positive_int(self.popsize, "popsize") < 2:
            raise ValueError(f"popsize must be >= 2 (CMA-ES recombines the best half of its population), "
                             f"got {self.popsize}")
        positive_float(self.sigma0, "sigma0")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {self.covariance!r}")
        loss_weights(mse_weight=self.mse_weight, perceptual_weight=self.perceptual_weight)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")


class CMAES(InversionMethod):
    """CMA-ES over the latent, one strategy per image, every image's population in one forward."""

    name = "cma-es"
    version = "1"
    Settings = CMAESSettings
    budget_setting = "generations"
    # quick costs 8.5 single-code steps per generation: 132 s per image on dcgan-digiface64 on a
    # 2-core CPU (docs/methods.md), ~35 min for the default run's 16 images
    in_default_run = False
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The embedded default run's budget: 100 generations (λ·100 forwards per image, no
        # backward), perceptual term at the generator's resolution as the other quick profiles.
        "quick": {"generations": 100, "perceptual_size": None},
        # The conformance suite's (budget 8): a local search (a prior sample as mean, σ⁽⁰⁾ = 0.2 prior
        # scales; at λ = 6 the paper's global start does not beat its first generation within 8 on
        # the tiny DCGANs and StyleGAN2, docs/methods.md), popsize 6 and no VGG, for speed.
        "test": {"generations": 8, "popsize": 6, "init": "sample", "sigma0": 0.2, "perceptual_weight": 0.0},
    }

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The initial step size, in prior scales (problem dependent in the tutorial; 1 by default)."""
        return {"sigma0": trial.suggest_float("sigma0", 0.05, 2.0, log=True)}

    def diagonal(self, n: int) -> bool:
        """Whether an ``n``-dim search gets a diagonal covariance (sep-CMA-ES)."""
        c = self.settings.covariance
        return c == "diagonal" or (c == "auto" and n > FULL_COVARIANCE_MAX)

    def _means(self, G: SplitGenerator, seeds: Sequence[int], prior_mean: np.ndarray) -> np.ndarray:
        """``[B, n]`` initial means: the prior's mean, zero, or per image a prior sample seeded by
        that image's seed."""
        if self.settings.init == "sample":
            return G.sample_latents(len(seeds), seed=code_seeds(seeds, 1, "cma-es:init"), device="cpu").double().numpy()
        start = prior_mean if self.settings.init == "mean" else np.zeros(G.latent_dim)
        return np.tile(start, (len(seeds), 1))

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        check_targets(targets, generator)
        s = self.settings
        seed_list = as_seed_list(seeds, targets.shape[0])
        G = frozen_copy(generator)
        targets = targets.to(G.device)
        popsize = s.popsize or default_popsize(G.latent_dim)
        prior_mean, prior_scale = prior_moments(G)
        sigma0, diagonal = s.sigma0 * prior_scale, self.diagonal(G.latent_dim)
        with torch.no_grad():
            with full_precision(G.device):  # cached target features in fp32
                loss = ReconstructionLoss(targets.repeat_interleave(popsize, 0),  # [B·λ, 3, R, R], image-major
                                          mse_weight=s.mse_weight, perceptual_weight=s.perceptual_weight,
                                          perceptual_size=s.perceptual_size or G.resolution)
            search = Strategies(self._means(G, seed_list, prior_mean), sigma0, popsize, diagonal,
                                code_seeds(seed_list, 1, "cma-es"))
            history = self._search(G, loss, search, progress)
            best = torch.from_numpy(search.best).to(G.device, torch.float32)  # [B, n]
            recon = G(best).float()
        return InversionResult(reconstructions=recon, latents={"z": best}, loss_history=history,
                               iterations=s.generations, failures=dict(search.failures),
                               info={"popsize": popsize, "sigma0": sigma0, "diagonal": diagonal,
                                     "stopped": dict(search.stopped),
                                     "sigma": torch.tensor([es.sigma for es in search.strategies])})

    def _search(self, G: SplitGenerator, loss: Callable[[Tensor], Tensor], search: Strategies,
                progress: ProgressFn | None) -> Tensor:
        """Run the generations; returns the ``[T, B]`` best-so-far losses."""
        total, b = self.settings.generations, len(search.best)

        def snapshot() -> Tensor:
            return G(torch.from_numpy(search.best).to(G.device, torch.float32)).float()

        trace_point(0, snapshot)
        history: list[np.ndarray] = []
        for t in range(total):
            if search.active.any():  # else every image has stopped: nothing left to evaluate
                mark_step()
                x = torch.from_numpy(search.ask()).to(G.device, torch.float32)  # [B·λ, n]
                f = loss(G(x).float()).double().cpu().numpy()  # [B·λ]
                search.tell(f.reshape(b, search.popsize), t)
            history.append(search.best_losses())
            trace_point(t + 1, snapshot)
            if len(search.failures) == b:
                raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(search.failures.items())))
            if progress is not None:
                progress(t + 1, total)
        return torch.from_numpy(np.stack(history)).float()  # [T, B]
