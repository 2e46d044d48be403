"""Timing, FLOPs, warm-up, batch sizing and out-of-memory back-off.

On CUDA the inversion of a batch is timed with CUDA events around synchronised work; on the CPU
with ``time.perf_counter``. Before its first timed batch each method runs one untimed short
inversion, so no method pays for one-off set-up (loading the perceptual network, kernel
selection, compilation).

FLOPs are counted around the whole ``invert`` call, whatever loop the method runs: once with a
budget of 1 and once with 2 (:meth:`InversionMethod.with_budget`); the difference is the cost of
one iteration, the rest the fixed cost of a call (loss set-up, final synthesis). A method
without a budget reports the FLOPs of one call.

The automatic batch size is, on CUDA, estimated from a memory probe (one iteration at 1 and at
up to 4 images; the growth of ``max_memory_allocated`` per image is scaled to 80 % of the free
memory) and, on the CPU, up to 16 images, fewer where one batch would hold more than about
``costs.CPU_BATCH_SECONDS`` of work (:func:`batch_within`, from a timed estimate in
:func:`~gan_inversion_bench.harness.costs.cpu_batch_size`): results are stored per batch, so a long
CPU run interrupted mid-batch loses at most that much, and its progress moves at least that often.
When ``invert`` runs out of memory the batch is halved and retried, down to one image.
"""
from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..generator import SplitGenerator, conditioned
from ..imagesets import ImageItem, stack_conditions
from ..method import InversionFailed, InversionMethod
from ..perf import count_flops
from ..precision import ExecutionOptions, execution_context
from .config import RunError

Echo = Callable[[str], None]

#: share of the free device memory the automatic batch size may plan to use
MEMORY_FRACTION = 0.8


class Timer:
    """CUDA events on CUDA (synchronised), perf_counter on CPU; also the peak memory."""

    seconds: float
    peak_mb: float
    mem_kind: str

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda-events" if device.type == "cuda" else "cpu-wall-clock"

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._end.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.mem_kind = "cuda-max-allocated"
        else:
            self.seconds = time.perf_counter() - self._t0
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
            self.mem_kind = "cpu-process-peak-rss"


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per image: ``per_iteration`` (None without a budget) and ``fixed`` per ``invert`` call."""

    per_iteration: float | None
    fixed: float

    def total(self, budget: int | None) -> float:
        """FLOPs per image of one ``invert`` call at ``budget``."""
        return self.fixed + (self.per_iteration or 0.0) * (budget or 0)


def _targets(items: list[ImageItem], device: torch.device) -> torch.Tensor:
    return torch.stack([it.image for it in items]).to(device)


def item_conditions(generator: SplitGenerator, items: list[ImageItem], device: torch.device) -> torch.Tensor | None:
    """The per-image class vectors of ``items`` for a conditional generator (``[B, C]`` on
    ``device``), or None when no item carries one (every unconditional run)."""
    if all(getattr(it, "condition", None) is None for it in items):
        return None
    c = stack_conditions(generator, items)
    return None if c is None else c.to(device)


def count_invert_flops(method: InversionMethod, generator: SplitGenerator, items: list[ImageItem],
                       device: torch.device, options: ExecutionOptions) -> FlopCount | None:
    """FLOPs of ``method.invert`` on ``items`` (see the module docstring); None if it cannot run
    (out of memory even for these images, every loss non-finite: the timed loop reports it).
    Counted eagerly at the run's precision (compilation does not change the count)."""
    targets, eager = _targets(items, device), ExecutionOptions(precision=options.precision)
    c = item_conditions(generator, items, device)
    generator.split_points  # noqa: B018 (the dry pass, cached: not part of the first count)

    def flops(m: InversionMethod) -> float:
        with execution_context(eager, device), conditioned(generator, c):
            return float(count_flops(lambda: m.invert(generator, targets, seeds=0)))

    b = len(items)
    try:
        if method.budget_setting is None:
            return FlopCount(None, flops(method) / b)
        one, two = flops(method.with_budget(1)), flops(method.with_budget(2))
    except RuntimeError as e:
        if is_out_of_memory(e) or isinstance(e, InversionFailed):
            return None
        raise
    per_iteration = (two - one) / b
    return FlopCount(per_iteration, max(one / b - per_iteration, 0.0))


def warm_up(method: InversionMethod, generator: SplitGenerator, items: list[ImageItem], device: torch.device,
            options: ExecutionOptions, iterations: int = 1) -> None:
    """An untimed short inversion (``iterations`` of the budget) of ``items`` with the run's options."""
    warm = method.with_budget(iterations) if method.budget_setting is not None else method
    try:
        with execution_context(options, device), conditioned(generator, item_conditions(generator, items, device)):
            warm.invert(generator, _targets(items, device), seeds=0)
    except RuntimeError as e:  # out of memory, every loss non-finite: the timed loop reports it
        if not (is_out_of_memory(e) or isinstance(e, InversionFailed)):
            raise
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_within(seconds_per_image: float, n: int, seconds: float) -> int:
    """The most of ``n`` images (at least 1) whose estimated work, ``seconds_per_image`` each,
    fits in ``seconds``; all ``n`` where the estimate is not positive (too fast to time)."""
    if not seconds_per_image > 0:
        return max(1, n)
    return max(1, min(n, int(seconds // seconds_per_image)))


def auto_batch_size(n: int, device: torch.device) -> int:
    """The rule without a probe: up to 16 images on the CPU, 64 elsewhere."""
    return max(1, min(n, 16 if device.type == "cpu" else 64))


def batch_from_probe(peak_1: float, peak_k: float, k: int, available: float, n: int,
                     fraction: float = MEMORY_FRACTION) -> int:
    """Batch size from a memory probe: peak memory (above what was allocated before) of one
    iteration at 1 and at ``k`` images, ``available`` bytes; at most ``n`` images, at least 1."""
    per_image = max((peak_k - peak_1) / (k - 1), 1.0) if k > 1 else max(peak_1, 1.0)
    fixed = max(peak_1 - per_image, 0.0)
    return max(1, min(n, int((fraction * available - fixed) // per_image)))


def automatic_batch_size(method: InversionMethod, generator: SplitGenerator, items: list[ImageItem],
                         device: torch.device, options: ExecutionOptions, echo: Echo) -> int:
    """The CPU rule, or on CUDA the memory probe (:func:`batch_from_probe`)."""
    n = len(items)
    if device.type != "cuda" or n == 1:
        return auto_batch_size(n, device)
    k = min(4, n)
    peaks = []
    for size in (1, k):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            warm_up(method, generator, items[:size], device, options)
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            return max(1, size // 2)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    bs = batch_from_probe(peaks[0], peaks[1], k, available, n)
    echo(f"{method.name}: automatic batch size {bs} (probe: {peaks[0] / 2**20:.0f} MiB at 1 image, "
         f"{peaks[1] / 2**20:.0f} MiB at {k}; {available / 2**30:.1f} GiB available, planning {MEMORY_FRACTION:.0%})")
    return bs


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error raised by a method: CUDA's, or the CPU allocator's (``RuntimeError:
    [enforce fail at alloc_cpu.cpp] … DefaultCPUAllocator: can't allocate memory``, ``MemoryError``)."""
    if isinstance(error, (RunError, InversionFailed)):
        return False
    text = str(error).lower()
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def smaller_batch(error: BaseException, size: int, method: str, device: torch.device, echo: Echo) -> int:
    """Half of ``size`` after an out-of-memory error; a :class:`RunError` if ``size`` was already 1."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if size <= 1:
        raise RunError(f"{method}: out of memory even with a batch of one image ({first_line}). Finished "
                       f"results are kept; free memory on {device} (or use a smaller generator or --device cpu) "
                       f"and run the same command again to resume.")
    if device.type == "cuda":
        traceback.clear_frames(error.__traceback__)  # the failed attempt's tensors are held by its frames
        torch.cuda.empty_cache()
    echo(f"{method}: out of memory with a batch of {size} images; retrying with {size // 2} ({first_line})")
    return size // 2
