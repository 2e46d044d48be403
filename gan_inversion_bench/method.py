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
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from torch import Tensor

from .generator import SplitGenerator

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
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    opt = make_optimizer(optimizer, params, lr)
    history: list[Tensor] = []
    failures: dict[int, str] = {}
    alive = torch.ones(params[0].shape[0], dtype=torch.bool, device=params[0].device)
    last_good = [p.detach().clone() for p in params]  # each image's last iterate with a finite loss
    every = max(1, iterations // 100)
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        losses = per_image_loss()  # [B]
        newly_bad = alive & ~torch.isfinite(losses.detach())
        if bool(newly_bad.any()):
            for i in newly_bad.nonzero().flatten().tolist():
                failures[i] = f"non-finite loss ({losses[i].item()}) at iteration {it}"
            alive &= ~newly_bad
            if not bool(alive.any()):
                raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(failures.items())))
        history.append(torch.where(alive, losses.detach(), torch.nan).float())
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
        if progress is not None and ((it + 1) % every == 0 or it + 1 == iterations):
            progress(it + 1, iterations)
    return torch.stack(history).cpu(), failures


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)
