"""Building blocks the built-in inversion methods share, for new methods to reuse.

* :func:`optimise`: the optimisation loop (per-image losses summed, non-finite losses recorded
  per image with the last finite iterate kept, progress, ``torch.compile`` of the step inside a
  compile mode, an optional learning-rate schedule, :data:`LR_SCHEDULES`);
* :func:`per_image_normal`, :func:`code_seeds`, :func:`as_seed_list`: initial codes that depend
  only on each image's seed, so a batch gives every image what it gets alone;
* :func:`check_targets`, :func:`positive_int`, :func:`positive_float`,
  :func:`check_split_setting`, :func:`default_split`: validation and per-generator defaults;
* the seeds' per-image execution pattern (``execution="reference"`` in the built-in methods,
  ``docs/performance.md``): :func:`invert_each` (one image at a time), :func:`unfreeze`
  (trainable parameters, as in the seeds) and :class:`SeedStyleLoss` (target features
  recomputed every iteration). Both modes solve the same problem from the same initialisation.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .generator import SplitGenerator, conditioned
from .losses import Distance
from .method import Artifact, InversionFailed, InversionResult, ProgressFn
from .precision import mark_step, maybe_compile


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


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                   lrs: Sequence[float | None] | None = None) -> torch.optim.Optimizer:
    """SGD (no momentum) or Adam over ``params``; ``lrs`` gives a learning rate per parameter
    (None: ``lr``), e.g. a separate one for mixing weights."""
    if not isinstance(name, str) or name.lower() not in ("sgd", "adam"):
        raise ValueError(f"unknown optimiser {name!r}; expected 'sgd' or 'adam'")
    name = name.lower()
    plist = list(params)
    groups: Any = plist
    if lrs is not None:
        if len(lrs) != len(plist):
            raise ValueError(f"got {len(lrs)} learning rates for {len(plist)} parameters")
        groups = [{"params": [p], "lr": lr if r is None else r} for p, r in zip(plist, lrs, strict=True)]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr, betas=betas)


#: learning-rate schedules of :func:`optimise` (a method's ``lr_schedule`` setting): ``"constant"`` (the
#: seeds'), ``"cosine"``: every learning rate times ``(1 + cos(π t / T)) / 2`` at step t of T, from the
#: full rate at the first step down towards 0 at the last (Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5
#: with one cycle and η_min = 0). A constant rate tuned at a short budget can leave a long run
#: oscillating about its floor (docs/results.md, experiment c at 2000 iterations); the decay lets it settle.
LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(name: Any) -> None:
    """Refuse a schedule :func:`optimise` does not know, naming the setting and the valid ones."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}, got {name!r}")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The multiplier of every learning rate at step ``step`` (0-based) of ``total``."""
    check_lr_schedule(schedule)
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def optimise(params: list[Tensor], per_image_loss: Callable[[], Tensor], *, optimizer: str, lr: float,
             iterations: int, progress: ProgressFn | None = None, **extra: Any) -> tuple[Tensor, dict[int, str]]:
    """Run ``iterations`` steps minimising ``per_image_loss().sum()``.

    Every tensor in ``params`` must have the batch as leading dimension. An image whose loss
    becomes non-finite is recorded as failed, its parameters are restored to the last finite
    iterate and frozen, and the others continue. Returns the ``[T, B]`` loss history and the
    failures. Raises :class:`InversionFailed` if every image fails.

    Optional keywords: ``lrs`` (a learning rate per parameter, None entries take ``lr``),
    ``schedule`` (one of :data:`LR_SCHEDULES`, default ``"constant"``: every rate times
    :func:`lr_factor` of the step, counted over ``total``, through ``torch.optim.lr_scheduler``),
    ``snapshot`` (a function returning the current reconstructions ``[B, 3, R, R]``; with it the
    loop reports quality along the way through :func:`trace_point` before the first step and
    after every step), and ``start`` and ``total`` for a method whose run is several calls in
    sequence (a later phase optimising other parameters): ``start`` steps are already done (trace
    points, progress and failure iterations count on from there; no point 0 unless ``start`` is 0),
    of ``total`` in all (the progress denominator; default ``start + iterations``).

    The losses are cast to fp32 (under bf16 autocast too). Inside
    :func:`gan_inversion_bench.precision.compile_mode` (the harness sets it around ``invert``) the
    closure ``per_image_loss`` (the forward pass; its backward is compiled with it) is compiled
    with ``torch.compile``; methods with their own loop get the generator compiled instead.
    """
    start, total = _phase(extra, iterations)
    snapshot = extra.get("snapshot")
    opt = make_optimizer(optimizer, params, lr, lrs=extra.get("lrs"))
    loop = _Loop(params, per_image_loss, opt, _scheduler(opt, extra.get("schedule", "constant"), start, total))
    every = max(1, total // 100)
    if snapshot is not None and start == 0:
        trace_point(0, snapshot)
    for it in range(start, start + iterations):
        loop.step(it)
        if snapshot is not None:
            trace_point(it + 1, snapshot)
        if (it + 1) % every == 0 or it + 1 == start + iterations:
            if not bool(loop.alive.any()):
                raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(loop.failures().items())))
            if progress is not None:
                progress(it + 1, total)
    failures = loop.failures() if bool((loop.bad_iteration >= 0).any()) else {}
    return torch.stack(loop.history).cpu(), failures


def _phase(extra: dict[str, Any], iterations: int) -> tuple[int, int]:
    """``(start, total)`` from :func:`optimise`'s keywords, validated with the rest of them."""
    unknown = set(extra) - {"lrs", "schedule", "snapshot", "start", "total"}
    if unknown:
        raise TypeError(f"optimise() got unexpected keyword arguments {sorted(unknown)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    start = int(extra.get("start", 0))
    total = int(extra.get("total", start + iterations))
    if start < 0 or total < start + iterations:
        raise ValueError(f"start must be >= 0 and total >= start + iterations, got start={start}, total={total}, "
                         f"iterations={iterations}")
    return start, total


def _scheduler(opt: torch.optim.Optimizer, schedule: Any, start: int,
               total: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``schedule`` over steps ``start`` … ``total``; None for the constant one. LambdaLR counts its
    own steps from 0, so a later phase (``start`` > 0) continues the run's schedule."""
    check_lr_schedule(schedule)
    if schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(schedule, start + k, total))


# ---- quality along the way ----------------------------------------------------------------------
#: the harness's trace sink: ``sink(iteration, snapshot)``; it decides whether ``iteration`` is a
#: trace point and only then calls ``snapshot()`` (under no_grad) for the current reconstructions
TraceSink = Callable[[int, Callable[[], Tensor]], None]
_trace_sink: contextvars.ContextVar[TraceSink | None] = contextvars.ContextVar("gib_trace_sink", default=None)


@contextlib.contextmanager
def tracing(sink: TraceSink) -> Iterator[None]:
    """Inside, :func:`trace_point` calls reach ``sink`` (the harness records quality curves)."""
    token = _trace_sink.set(sink)
    try:
        yield
    finally:
        _trace_sink.reset(token)


def trace_point(iteration: int, snapshot: Callable[[], Tensor]) -> None:
    """Report progress for quality-versus-compute curves: call it with 0 before the first step and
    with the number of steps done after each step. ``snapshot()`` must return the current
    reconstructions ``[B, 3, R, R]``; it is called only at the trace points the harness chose
    (log-spaced), so the call costs nothing otherwise. :func:`optimise` does this for methods that
    pass ``snapshot``; a method with its own loop calls it itself."""
    sink = _trace_sink.get()
    if sink is not None:
        sink(iteration, snapshot)


class _Loop:
    """The state of :func:`optimise`. Failure bookkeeping stays on the device: no host
    synchronisation inside the loop except the all-failed check at the progress points."""

    def __init__(self, params: list[Tensor], per_image_loss: Callable[[], Tensor], opt: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None):
        self.params, self.opt, self.scheduler = params, opt, scheduler
        self.loss_step = maybe_compile(per_image_loss)
        b, device = params[0].shape[0], params[0].device
        self.alive = torch.ones(b, dtype=torch.bool, device=device)
        self.bad_iteration = torch.full((b,), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros(b, device=device)
        self.last_good = [p.detach().clone() for p in params]  # each image's last iterate with a finite loss
        self.history: list[Tensor] = []

    def failures(self) -> dict[int, str]:
        its, values = self.bad_iteration.tolist(), self.bad_value.tolist()
        return {i: f"non-finite loss ({values[i]}) at iteration {its[i]}" for i in range(len(its)) if its[i] >= 0}

    def _rows(self, p: Tensor) -> Tensor:
        return self.alive.view(-1, *([1] * (p.ndim - 1)))

    def step(self, it: int) -> None:
        mark_step()
        self.opt.zero_grad(set_to_none=True)
        losses = self.loss_step().float()  # [B]
        finite = torch.isfinite(losses.detach())
        newly_bad = self.alive & ~finite
        self.bad_iteration.copy_(torch.where(newly_bad, it, self.bad_iteration))
        self.bad_value.copy_(torch.where(newly_bad, losses.detach(), self.bad_value))
        self.alive.logical_and_(finite)
        self.history.append(torch.where(self.alive, losses.detach(), torch.nan))
        # Per-image losses are independent, so zeroing a failed image's loss and gradient
        # leaves every other image's trajectory exactly as it was.
        torch.where(self.alive, losses, torch.zeros_like(losses)).sum().backward()
        with torch.no_grad():
            for p, good in zip(self.params, self.last_good, strict=True):
                if p.grad is not None:
                    p.grad.copy_(torch.where(self._rows(p), p.grad, torch.zeros_like(p.grad)))
                good.copy_(torch.where(self._rows(p), p, good))
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        with torch.no_grad():
            for p, good in zip(self.params, self.last_good, strict=True):
                p.copy_(torch.where(self._rows(p), p, good))


# ---- the seeds' per-image execution pattern ("reference" mode) ----------------------------------

EXECUTIONS = ("batched", "reference")


def check_execution(value: Any) -> str:
    if value not in EXECUTIONS:
        raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}, got {value!r}")
    execution: str = value
    return execution


def unfreeze(module: torch.nn.Module) -> torch.nn.Module:
    """Parameters trainable again (on a private copy!), as in the seeds: autograd then also computes
    the parameters' gradients, which nobody uses. Only for the ``reference`` execution mode."""
    return module.requires_grad_(True)


class SeedStyleLoss:
    """The seeds' way of evaluating a :class:`~gan_inversion_bench.losses.ReconstructionLoss`.

    Same value as ``loss(x)`` (the active task's degradation included), but the perceptual network
    runs on a private copy whose parameters require gradients, and the target's side is recomputed
    at every call (the seeds' ``VGGLoss`` takes both images every iteration). Only for the
    ``reference`` execution mode.
    """

    def __init__(self, loss: Any):
        self.mse_weight, self.perceptual_weight = loss.mse_weight, loss.perceptual_weight
        self.targets, self.degrade = loss.targets, loss.degrade
        self.distance: Distance | None = None if loss.distance is None else copy.deepcopy(loss.distance)
        if self.distance is not None:
            unfreeze(self.distance)

    def __call__(self, x: Tensor) -> Tensor:
        if self.degrade is not None:
            x = self.degrade(x)
        out: Tensor = self.mse_weight * (x - self.targets).pow(2).flatten(1).mean(1)  # [B]
        if self.distance is not None:
            out = out + self.perceptual_weight * self.distance(x, self.distance.features(self.targets))
        return out


def invert_each(invert_one: Callable[..., InversionResult], targets: Tensor, seeds: Sequence[int],
                progress: ProgressFn | None = None, generator: SplitGenerator | None = None) -> InversionResult:
    """Invert a batch one image at a time (the seeds' pattern) and join the results.

    ``invert_one(targets[i:i+1], seeds=[seeds[i]], progress=...)`` must return a one-image
    :class:`InversionResult`. Latents, loss histories and tensor-valued ``info`` entries with a
    leading batch dimension of 1 are concatenated; other ``info`` entries come from the first
    image. An image that fails entirely is reported in ``failures`` (its reconstruction is NaN).
    With per-image class conditions set on ``generator``, image i is inverted with its own.
    """
    parts, failures = _invert_parts(invert_one, targets, seeds, progress, generator)
    template = next((p for p in parts if p is not None), None)
    if template is None:
        raise InversionFailed("; ".join(f"image {i}: {r}" for i, r in sorted(failures.items())))
    return _join(parts, template, failures)


def _invert_parts(invert_one: Callable[..., InversionResult], targets: Tensor, seeds: Sequence[int],
                  progress: ProgressFn | None, generator: SplitGenerator | None
                  ) -> tuple[list[InversionResult | None], dict[int, str]]:
    b = targets.shape[0]
    classes = None if generator is None else generator.conditions
    parts: list[InversionResult | None] = []
    failures: dict[int, str] = {}
    for i in range(b):
        def step(done: int, n: int, i: int = i) -> None:
            if progress is not None:
                progress(i * n + done, b * n)

        try:
            with contextlib.ExitStack() as stack:
                if generator is not None and classes is not None:
                    stack.enter_context(conditioned(generator, classes[i:i + 1]))
                r = invert_one(targets[i:i + 1], seeds=[int(seeds[i])], progress=step)
        except InversionFailed as e:
            parts.append(None)
            failures[i] = str(e)
            continue
        parts.append(r)
        if 0 in r.failures:
            failures[i] = r.failures[0]
    return parts, failures


def _join(parts: list[InversionResult | None], template: InversionResult, failures: dict[int, str]) -> InversionResult:
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


def loss_weights(**weights: Any) -> None:
    """Loss weights: finite numbers >= 0, not all 0 (NaN and inf refused by name)."""
    for name, v in weights.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not any(weights.values()):
        raise ValueError(f"loss weights must not all be 0, got {weights}")


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


def folder_artifacts(run_dir: Path, folder: str, captions: dict[str, str], pattern: str = "*.png") -> list[Artifact]:
    """The files ``pattern`` in ``run_dir/folder`` for a method's ``report_artifacts``, captioned by file name
    (the name itself where ``captions`` has none). A ``folder`` that the report may not read (a symbolic link, a
    path out of the run folder) is not listed, because its listing would show names from outside the run folder:
    it is returned as itself, for the report to refuse and name."""
    from .safe_paths import problem

    if problem(run_dir, folder):
        return [Artifact(Path(folder), f"the folder {folder}")]
    found = sorted((run_dir / folder).glob(pattern)) if (run_dir / folder).is_dir() else []
    return [Artifact(p.relative_to(run_dir), captions.get(p.name, p.name)) for p in found]


__all__ = ["EXECUTIONS", "SeedStyleLoss", "TraceSink", "as_seed_list", "check_execution", "check_split_setting",
           "check_targets", "code_seeds", "default_split", "folder_artifacts", "invert_each", "make_optimizer",
           "optimise", "per_image_normal", "positive_float", "positive_int", "loss_weights", "trace_point", "tracing",
           "unfreeze"]
