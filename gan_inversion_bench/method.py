"""The ``InversionMethod`` contract and the optimisation loop the built-in methods share.

A method is a class with

* ``name`` and ``version`` (stored with every result),
* ``Settings``: a dataclass of keyword-only hyper-parameters with documented defaults
  (the paper's), validated in ``__post_init__``; ``PROFILES`` maps profile names to overrides,
* an optional ``prepare(generator, ...)`` stage whose learned state ends in ``_``,
* ``invert(generator, targets, *, seeds) -> InversionResult``.

``invert`` optimises a batch of targets jointly but independently: every image has its own
parameters and the loss is the *sum* of per-image losses, so each image follows the trajectory
it would follow alone (``seeds[i]`` alone decides image i's initialisation). ``invert`` never
mutates the caller's generator or targets.

Execution modes (the built-in methods' ``execution`` setting, ``docs/performance.md``):
``"batched"`` (default) is the toolkit's formulation: frozen generator, all codes of all images
in one generator call, cached target features. ``"reference"`` re-enacts the seeds' per-image
pattern for speed comparisons: one image at a time (:func:`invert_each`), one G1 call per code,
generator and VGG parameters left trainable (:func:`unfreeze`, so autograd also computes their
unused gradients) and the target features recomputed every iteration (:class:`SeedStyleLoss`).
Both modes solve the same problem from the same initialisation. Precision is not a method
setting: the harness wraps ``invert`` in :func:`gan_inversion_bench.precision.execution_context`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from torch import Tensor

from .generator import SplitGenerator
from .perf import count_flops, iteration_flops_wanted, report_iteration_flops
from .precision import mark_step, maybe_compile

ProgressFn = Callable[[int, int], None]  # (iteration done, total)


class InversionFailed(RuntimeError):
    """Raised when every image of a batch failed (non-finite loss)."""


@dataclass
class InversionResult:
    """What ``invert`` returns for a batch of ``B`` targets.

    ``reconstructions``: ``[B, 3, H, W]`` raw generator output (unclamped, nominally [-1, 1]).
    ``latents``: the optimised parameters, each with the batch as leading dimension.
    ``loss_history``: ``[T, B]`` per-image loss at every iteration (before the step).
    ``failures``: image index → reason (e.g. a non-finite loss at iteration t); those images'
    reconstructions are from their last finite iterate.
    """

    reconstructions: Tensor
    latents: dict[str, Tensor]
    loss_history: Tensor
    iterations: int
    failures: dict[int, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class InversionMethod:
    """Base class: stores validated settings; subclasses implement :meth:`invert`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Settings: ClassVar[type]
    #: profile name → settings overrides; "paper" must reproduce the seeds' defaults
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}}

    def __init__(self, **settings: Any):
        fields = {f.name for f in dataclasses.fields(self.Settings)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise TypeError(f"{self.name}: unknown setting(s) {unknown}; valid settings: {sorted(fields)}")
        self.settings = self.Settings(**settings)

    @classmethod
    def from_profile(cls, profile: str = "paper", **overrides: Any) -> "InversionMethod":
        if profile not in cls.PROFILES:
            raise ValueError(f"{cls.name}: unknown profile {profile!r}; valid: {sorted(cls.PROFILES)}")
        return cls(**{**cls.PROFILES[profile], **overrides})

    def get_settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None) -> "InversionMethod":
        """Optional stage run once per generator before ``invert`` (default: nothing)."""
        return self

    def prepared_state(self) -> dict[str, Any]:
        """JSON-able description of what ``prepare`` learned (stored with results)."""
        return {}

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


# ---- helpers shared by the built-in methods ---------------------------------------------------

def as_seed_list(seeds: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seeds, int):
        return [seeds] * n
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} targets")
    return seeds


def per_image_normal(seeds: Sequence[int], shape: Sequence[int], device: Any, stream: int = 0) -> Tensor:
    """``[B, *shape]`` standard normals; row i depends only on ``(seeds[i], stream)``."""
    rows = []
    for s in seeds:
        # offset so that an init never coincides with sample_latents(seed) of the same seed
        g = torch.Generator().manual_seed(int(s) * 1_000_003 + 7919 * (stream + 1))
        rows.append(torch.randn(*shape, generator=g))
    return torch.stack(rows).to(device)


def check_targets(targets: Tensor, generator: SplitGenerator) -> None:
    """Validate a target batch at the boundary; messages say what was expected and found."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor [B, 3, H, W], got {type(targets).__name__}")
    r = generator.resolution
    if targets.ndim != 4 or targets.shape[1] != 3 or tuple(targets.shape[2:]) != (r, r):
        raise ValueError(f"targets must have shape [B, 3, {r}, {r}] for generator "
                         f"{generator.name or type(generator).__name__}, got {list(targets.shape)}")
    if not targets.is_floating_point():
        raise ValueError(f"targets must be float images in [-1, 1], got dtype {targets.dtype}")
    if targets.numel() and (targets.min() < -1.001 or targets.max() > 1.001):
        raise ValueError(f"targets must lie in [-1, 1], found [{targets.min():.3f}, {targets.max():.3f}]")


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999)):
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(list(params), lr=lr)
    if name == "adam":
        return torch.optim.Adam(list(params), lr=lr, betas=betas)
    raise ValueError(f"unknown optimiser {name!r}; expected 'sgd' or 'adam'")


def optimise(params: list[Tensor], per_image_loss: Callable[[], Tensor], *, optimizer: str, lr: float,
             iterations: int, progress: ProgressFn | None = None) -> tuple[Tensor, dict[int, str]]:
    """Run ``iterations`` steps minimising ``per_image_loss().sum()``.

    Every tensor in ``params`` must have the batch as leading dimension. An image whose loss
    becomes non-finite is recorded as failed, its parameters are restored to the last finite
    iterate and frozen, and the others continue. Returns the ``[T, B]`` loss history and the
    failures. Raises :class:`InversionFailed` if every image fails.

    The losses are cast to fp32 (under bf16 autocast too). Inside
    :func:`gan_inversion_bench.precision.compile_mode` the closure ``per_image_loss`` (the
    forward pass; its backward is compiled with it) is compiled with ``torch.compile``. Inside
    :func:`gan_inversion_bench.perf.record_iteration_flops` the first iteration runs eagerly
    under the FLOP counter and reports the FLOPs of one iteration per image.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    loss_step = maybe_compile(per_image_loss)
    opt = make_optimizer(optimizer, params, lr)
    history: list[Tensor] = []
    b, device = params[0].shape[0], params[0].device
    # Failure bookkeeping stays on the device: no host synchronisation inside the loop except
    # the all-failed check at the progress points (every 1 % of the iterations).
    alive = torch.ones(b, dtype=torch.bool, device=device)
    bad_iteration = torch.full((b,), -1, dtype=torch.long, device=device)
    bad_value = torch.zeros(b, device=device)
    last_good = [p.detach().clone() for p in params]  # each image's last iterate with a finite loss
    every = max(1, iterations // 100)

    def failures_so_far() -> dict[int, str]:
        its, values = bad_iteration.tolist(), bad_value.tolist()
        return {i: f"non-finite loss ({values[i]}) at iteration {its[i]}" for i in range(b) if its[i] >= 0}

    def step(it: int, eager: bool = False) -> None:
        mark_step()
        opt.zero_grad(set_to_none=True)
        losses = (per_image_loss if eager else loss_step)().float()  # [B]
        finite = torch.isfinite(losses.detach())
        newly_bad = alive & ~finite
        bad_iteration.copy_(torch.where(newly_bad, it, bad_iteration))
        bad_value.copy_(torch.where(newly_bad, losses.detach(), bad_value))
        alive.logical_and_(finite)
        history.append(torch.where(alive, losses.detach(), torch.nan))
        # Per-image losses are independent, so zeroing a failed image's loss and gradient
        # leaves every other image's trajectory exactly as it was.
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        with torch.no_grad():
            for p, good in zip(params, last_good):
                rows = alive.view(-1, *([1] * (p.ndim - 1)))
                if p.grad is not None:
                    p.grad.copy_(torch.where(rows, p.grad, torch.zeros_like(p.grad)))
                good.copy_(torch.where(rows, p, good))
        opt.step()
        with torch.no_grad():
            for p, good in zip(params, last_good):
                p.copy_(torch.where(alive.view(-1, *([1] * (p.ndim - 1))), p, good))

    for it in range(iterations):
        if it == 0 and iteration_flops_wanted():  # the harness's warm-up asks for the cost of one iteration
            report_iteration_flops(count_flops(lambda: step(0, eager=True)) / b)
        else:
            step(it)
        if (it + 1) % every == 0 or it + 1 == iterations:
            if not bool(alive.any()):
                raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(failures_so_far().items())))
            if progress is not None:
                progress(it + 1, iterations)
    failures = failures_so_far() if bool((bad_iteration >= 0).any()) else {}
    return torch.stack(history).cpu(), failures


# ---- the seeds' per-image execution pattern ("reference" mode) ----------------------------------

EXECUTIONS = ("batched", "reference")


def check_execution(value: Any) -> str:
    if value not in EXECUTIONS:
        raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}, got {value!r}")
    return value


def unfreeze(module: torch.nn.Module) -> torch.nn.Module:
    """Parameters trainable again (on a private copy!), as in the seeds: autograd then also computes
    the parameters' gradients, which nobody uses. Only for the ``reference`` execution mode."""
    return module.requires_grad_(True)


class SeedStyleLoss:
    """The seeds' way of evaluating a :class:`~gan_inversion_bench.losses.ReconstructionLoss`.

    Same value as ``loss(x)``, but the VGG runs on a private copy whose parameters require
    gradients, and the target features are recomputed at every call (the seeds' ``VGGLoss``
    takes both images every iteration). Only for the ``reference`` execution mode.
    """

    def __init__(self, loss: Any):
        self.mse_weight, self.perceptual_weight = loss.mse_weight, loss.perceptual_weight
        self.targets = loss.targets
        self.vgg = None if loss.vgg is None else unfreeze(copy.deepcopy(loss.vgg))

    def __call__(self, x: Tensor) -> Tensor:
        out = self.mse_weight * (x - self.targets).pow(2).flatten(1).mean(1)  # [B]
        if self.vgg is not None:
            out = out + self.perceptual_weight * (self.vgg(x) - self.vgg(self.targets)).abs().flatten(1).mean(1)
        return out


def invert_each(invert_one: Callable[..., InversionResult], targets: Tensor, seeds: Sequence[int],
                progress: ProgressFn | None = None) -> InversionResult:
    """Invert a batch one image at a time (the seeds' pattern) and join the results.

    ``invert_one(targets[i:i+1], seeds=[seeds[i]], progress=...)`` must return a one-image
    :class:`InversionResult`. Latents, loss histories and tensor-valued ``info`` entries with a
    leading batch dimension of 1 are concatenated; other ``info`` entries come from the first
    image. An image that fails entirely is reported in ``failures`` (its reconstruction is NaN).
    """
    b = targets.shape[0]
    parts: list[InversionResult | None] = []
    failures: dict[int, str] = {}
    for i in range(b):
        def step(done: int, n: int, i: int = i) -> None:
            if progress is not None:
                progress(i * n + done, b * n)

        try:
            r = invert_one(targets[i:i + 1], seeds=[int(seeds[i])], progress=step)
        except InversionFailed as e:
            parts.append(None)
            failures[i] = str(e)
            continue
        parts.append(r)
        if 0 in r.failures:
            failures[i] = r.failures[0]
    template = next((p for p in parts if p is not None), None)
    if template is None:
        raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(failures.items())))

    def nan_like(t: Tensor) -> Tensor:
        return torch.full_like(t, float("nan"))

    done = [p if p is not None else dataclasses.replace(
        template, reconstructions=nan_like(template.reconstructions),
        latents={k: nan_like(v) for k, v in template.latents.items()}, loss_history=nan_like(template.loss_history),
        failures={}, info={k: nan_like(v) if isinstance(v, Tensor) else v for k, v in template.info.items()})
        for p in parts]
    info = dict(template.info)
    for k, v in template.info.items():
        if isinstance(v, Tensor) and v.ndim and v.shape[0] == 1:
            info[k] = torch.cat([d.info[k] for d in done])
    return InversionResult(
        reconstructions=torch.cat([d.reconstructions for d in done]),
        latents={k: torch.cat([d.latents[k] for d in done]) for k in template.latents},
        loss_history=torch.cat([d.loss_history for d in done], dim=1), iterations=template.iterations,
        failures=failures, info=info)


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


# ---- helpers shared by the multi-code methods ---------------------------------------------------

def default_split(generator: SplitGenerator, table: dict[str, int]) -> int:
    """A method's per-generator default split: by registry name, then class name, then a heuristic.

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


def check_split_setting(split: Any) -> None:
    """A ``split`` setting: None (the method's default), a split-point name, or an index >= 0."""
    if split is None or isinstance(split, str):
        return
    if isinstance(split, bool) or not isinstance(split, int) or split < 0:
        raise ValueError(f"split must be None (per-generator default), a split-point name or an index >= 0, "
                         f"got {split!r}")


def code_seeds(image_seeds: Sequence[int], n: int, stream: str = "") -> list[int]:
    """``n`` seeds per image, derived only from that image's seed (and ``stream``), image-major,
    so a batch gives every image the codes it gets alone."""
    out = []
    for s in image_seeds:
        for k in range(n):
            digest = hashlib.blake2b(f"{int(s)}:{stream}:{k}".encode(), digest_size=8).digest()
            out.append(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return out
