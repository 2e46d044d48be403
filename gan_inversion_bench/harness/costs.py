"""What a method costs besides its per-image time: its one-off preparation, the latency of one
image alone, and budgets given in compute instead of iterations.

* **Preparation** (``prepare``: PmSFC's subspace discovery, any training) is timed once per
  method and run and stored in the ``timings`` table (``kind = 'prepare'``), noting whether the
  state came from the cache (``from_cache_``).
* **Latency**: after a method's batches, the first image is inverted again alone (batch of one,
  the way the original code inverts) and timed (``kind = 'latency'``); the batched rows give the
  throughput. Not repeated on resume once stored.
* **CPU batch size**: on the CPU the automatic batch (up to 16 images) is lowered where one batch
  would hold more than ``CPU_BATCH_SECONDS`` of work, estimated from one image's time per
  iteration (calibrated like the seconds budget below) × iterations × restarts, or from
  ``--budget-seconds`` × restarts where that is given. An interrupted run loses at most one batch.
  The methods' results do not depend on the batch (their ``batch_independent`` tag, checked by the
  conformance suite), so this changes when rows are written, not what they hold.
* **Compute budgets** (``RunConfig.budget_seconds`` / ``budget_flops``): the iteration count is
  derived per method. FLOPs: ``(budget_flops − fixed) / per_iteration`` from the FLOP count.
  Seconds: the per-iteration time is calibrated on the first timed batch shape (a budget of
  ``CALIBRATION[1]`` minus one of ``CALIBRATION[0]``, after an untimed warm-up call, so the fixed
  cost cancels; where that difference is within timing noise, the longer call's whole time, so the
  count errs low) and stored (``kind = 'calibration'``, with a note saying which). With several
  limits (``--iterations`` too) the smallest binds; every record says which (``budget`` column).
  The derived count is stored in the run's meta data and reused on resume, so one configuration
  never mixes different iteration counts.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..generator import SplitGenerator, conditioned
from ..imagesets import ImageItem
from ..method import InversionFailed, InversionMethod
from ..precision import execution_context
from ..weights import available_memory
from .config import RunConfig, RunError
from .context import RunContext, RunSetup
from .progress import progress_for
from .records import MethodPlan
from .timing import Timer, batch_within, item_conditions

#: the two budgets whose time difference calibrates the per-iteration time of --budget-seconds
CALIBRATION = (2, 7)
#: on the CPU, the work (seconds) one automatic batch may hold: what an interrupted run can lose
CPU_BATCH_SECONDS = 900.0


def timed_prepare(method: InversionMethod, generator: SplitGenerator, rc: RunContext) -> float:
    """Run ``method.prepare`` (its cache in the run folder) and return the seconds it took."""
    if rc.device.type == "cuda":
        torch.cuda.synchronize(rc.device)
    t0 = time.perf_counter()
    bar = progress_for(f"{method.name}: preparing", rc.progress)  # e.g. PmSFC's subspace discovery
    try:
        method.prepare(generator, seed=rc.config.seed, cache_dir=rc.run_dir / "cache",
                       progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if rc.device.type == "cuda":
        torch.cuda.synchronize(rc.device)
    return time.perf_counter() - t0


def record_prepare(rc: RunContext, plan: MethodPlan, seconds: float, device: str) -> None:
    if rc.store is None:
        return
    cached: Any = getattr(plan.method, "from_cache_", None)
    note = {True: "loaded from the cache", False: "computed"}.get(cached, "")
    rc.store.add_timing({"method_key": plan.key, "kind": "prepare", "seconds": seconds, "device": device,
                         "timer": "wall clock", "note": note, "session": rc.session})


def _time_invert(method: InversionMethod, setup: RunSetup, items: list[ImageItem], rc: RunContext,
                 plan: MethodPlan) -> float:
    targets = torch.stack([it.image for it in items]).to(rc.device)
    seeds = list(range(len(items)))
    with Timer(rc.device) as timer, execution_context(plan.options, rc.device), \
            conditioned(setup.generator, item_conditions(setup.generator, items, rc.device)):
        method.invert(setup.generator, targets, seeds=seeds)
    return timer.seconds


def measure_latency(rc: RunContext, setup: RunSetup, plan: MethodPlan, device: str) -> None:
    """Time the first image inverted alone (once per method key; main process only)."""
    if rc.store is None or not rc.config.latency or not setup.images.items:
        return
    if any(t["method_key"] == plan.key and t["kind"] == "latency" for t in rc.store.timings()):
        return
    item = setup.images.items[0]
    try:
        seconds = _time_invert(plan.method, setup, [item], rc, plan)
    except (InversionFailed, torch.cuda.OutOfMemoryError) as e:  # the batched results stand; say why
        rc.echo(f"{plan.method.name}: latency not measured ({item.id} alone failed: {str(e).splitlines()[0]})")
        return
    rc.store.add_timing({"method_key": plan.key, "kind": "latency", "seconds": seconds, "images": 1, "batch_size": 1,
                         "device": device, "timer": "cuda-events" if rc.device.type == "cuda" else "cpu-wall-clock",
                         "note": f"{item.id} alone, {plan.method.budget} iterations", "session": rc.session})


def derive_budget(rc: RunContext, setup: RunSetup, plan: MethodPlan, rows: list[ImageItem]) -> dict[str, Any] | None:
    """Set ``plan.method``'s budget from ``--budget-seconds`` / ``--budget-flops``; the record's
    ``budget`` column (None when no compute budget was given)."""
    c, m = rc.config, plan.method
    if c.budget_seconds is None and c.budget_flops is None:
        return None
    if m.budget_setting is None:
        rc.echo(f"{m.name}: has no compute budget setting; --budget-seconds/--budget-flops do not apply")
        return None
    stored = rc.store.get_meta(f"budget:{plan.key}") if rc.store is not None else None
    info = stored if isinstance(stored, dict) else _limits(rc, setup, plan, rows)
    if rc.store is not None and stored is None:
        rc.store.set_meta(f"budget:{plan.key}", info)
    plan.method = m.with_budget(int(info["iterations"]))
    rc.echo(f"{m.name}: {info['iterations']} iterations ({info['binding']} budget binding: {info['limits']})")
    return dict(info)


class BudgetTooSmall(ValueError):
    """A method's per-image compute budget does not cover one iteration (after its fixed cost)."""


def _why(plan: MethodPlan, c: RunConfig) -> str:
    """What the FLOP budget went on before the first iteration, when that is the reason."""
    if c.budget_flops is None or plan.flops is None or plan.flops.fixed < c.budget_flops:
        return ""
    return (f"; its fixed cost per image before the first iteration ({plan.flops.fixed / 1e9:.1f} GFLOP, e.g. a "
            f"pivot or an initial evaluation) already exceeds --budget-flops ({c.budget_flops / 1e9:.1f} GFLOP): "
            f"raise the budget or lower that stage's cost")


def _calibrate(m: InversionMethod, setup: RunSetup, rows: list[ImageItem], rc: RunContext,
               plan: MethodPlan) -> tuple[float, str]:
    """Seconds per iteration and image for --budget-seconds, and how they were found: the time
    difference of two budgets after an untimed warm-up call. Where the difference does not exceed
    timing noise (tiny iterations on a loaded machine: t(7) came out below t(2) once, which made the
    per-iteration time 1e-9 s and the budget billions of iterations), the longer call's whole time
    counts as iterations: fewer iterations than the budget allows, never more."""
    lo, hi = CALIBRATION
    _time_invert(m.with_budget(lo), setup, rows, rc, plan)  # first-call costs (allocation, kernel choice)
    a, b = (_time_invert(m.with_budget(n), setup, rows, rc, plan) for n in CALIBRATION)
    if b - a > 0.05 * b:
        return (b - a) / (hi - lo) / len(rows), \
            f"per iteration and image: (t({hi}) - t({lo})) / {hi - lo} / {len(rows)}"
    return b / hi / len(rows), (f"per iteration and image: t({hi}) / {hi} / {len(rows)} (t({hi}) - t({lo}) = "
                                f"{b - a:.3g} s was within timing noise; the fixed cost counts as iterations)")


def _flops_iterations(c: RunConfig, plan: MethodPlan) -> int | None:
    """The iterations ``--budget-flops`` allows: ``(budget_flops − fixed) / per_iteration``, rounded
    down; None where the FLOPs could not be counted."""
    assert c.budget_flops is not None
    if plan.flops is None or not plan.flops.per_iteration:
        return None
    return math.floor((c.budget_flops - plan.flops.fixed) / plan.flops.per_iteration)


def _planned_iterations(c: RunConfig, plan: MethodPlan) -> int | None:
    """The iterations each inversion of ``plan`` will run, before :func:`derive_budget` has fixed
    them: the method's budget, or the FLOP budget's count capped by ``--iterations``."""
    if c.budget_flops is None:
        return plan.method.budget
    by_flops = _flops_iterations(c, plan)
    return by_flops if by_flops is None or c.budget is None else min(by_flops, c.budget)


def cpu_batch_size(rc: RunContext, setup: RunSetup, plan: MethodPlan, items: list[ImageItem], bs: int) -> int:
    """The automatic CPU batch ``bs`` (images, each inverted ``restarts`` times) lowered so that one
    batch holds at most about ``CPU_BATCH_SECONDS`` of work (see the module docstring)."""
    c, m, k = rc.config, plan.method, rc.config.restarts
    if rc.device.type != "cpu" or bs <= 1 or m.budget_setting is None:
        return bs
    if c.budget_seconds is not None:
        per_image, how = c.budget_seconds * k, f"--budget-seconds {c.budget_seconds:g}"
    else:
        iterations = _planned_iterations(c, plan)
        if iterations is None:
            return bs
        per_iteration, _ = _calibrate(m, setup, items[:1], rc, plan)
        per_image, how = per_iteration * iterations * k, f"{per_iteration:.3g} s per iteration × {iterations:.0f}"
        if k > 1:
            how += f" × {k} restarts"
    limit = CPU_BATCH_SECONDS
    capped = batch_within(per_image, bs, limit)
    if capped < bs:
        rc.echo(f"{m.name}: automatic CPU batch of {capped} image(s), not {bs}: about {per_image:.0f} s per image "
                f"({how}), and a batch holds at most about {limit:.0f} s of work, so an interrupted run loses at "
                f"most that (--batch-size sets it)")
    return capped


def _limits(rc: RunContext, setup: RunSetup, plan: MethodPlan, rows: list[ImageItem]) -> dict[str, Any]:
    c, m = rc.config, plan.method
    limits: dict[str, int] = {}
    if c.budget is not None:
        limits["iterations"] = c.budget
    info: dict[str, Any] = {"seconds": c.budget_seconds, "flops": c.budget_flops}
    if c.budget_flops is not None:
        by_flops = _flops_iterations(c, plan)
        if by_flops is None:
            raise ValueError(f"{m.name}: its FLOPs could not be counted, so --budget-flops cannot be applied")
        limits["flops"] = by_flops
    if c.budget_seconds is not None:
        per_iteration, note = _calibrate(m, setup, rows, rc, plan)
        info["seconds_per_iteration"] = per_iteration
        limits["seconds"] = math.floor(c.budget_seconds / per_iteration)
        if rc.store is not None:
            rc.store.add_timing({"method_key": plan.key, "kind": "calibration", "seconds": per_iteration,
                                 "images": len(rows), "batch_size": len(rows), "session": rc.session, "note": note})
    binding = min(limits, key=lambda k: (limits[k], k))
    if limits[binding] < 1:
        raise BudgetTooSmall(f"{m.name}: the compute budget allows less than one iteration ({limits}){_why(plan, c)}")
    return {**info, "iterations": limits[binding], "binding": binding, "limits": limits}


# ---- impossible settings, refused before anything is allocated -------------------------------------------
def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the allocator's view; CPU: what the system can give without
    swapping, as the checkpoint loader measures it)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def memory_floor(plan: MethodPlan, generator: SplitGenerator, rows: int) -> int:
    """A lower bound of what inverting ``rows`` images needs (bytes): every code with its gradient
    and two optimiser states, each code's features at the split (forward and backward), and the
    loss history (a tensor of ``rows`` values, about 100 bytes of overhead each, per iteration)."""
    codes = int(plan.method.capacity().get("codes", 1))
    split = plan.method.resolved_split(generator)
    feature = math.prod(generator.split_points[split].shape) if split is not None else 0
    per_row = codes * (generator.latent_dim * 4 * 4 + feature * 4 * 2)
    budget = plan.method.budget or 0
    return rows * per_row + budget * (rows * 4 + 100)


def check_memory(plan: MethodPlan, generator: SplitGenerator, images: int, device: torch.device,
                 restarts: int = 1) -> None:
    """Refuse, with the estimate, a batch of ``images`` images, each inverted from ``restarts``
    initialisations (one row each), whose memory floor exceeds what the device has free."""
    rows = images * restarts
    need, free = memory_floor(plan, generator, rows), available_bytes(device)
    if free is None or need <= free:
        return
    what, lower = f"{images} image(s)", "the budget (--iterations), the codes or the batch size (--batch-size)"
    if restarts > 1:
        what = f"{images} image(s) with {restarts} restarts (--restarts) each, {rows} inversions in all,"
        lower = f"the restarts (--restarts), {lower}"
    raise RunError(f"{plan.method.name}: {what} at budget {plan.method.budget} with "
                   f"{plan.method.capacity().get('codes', 1)} code(s) each need at least {need / 2**30:.3g} GiB; "
                   f"{free / 2**30:.3g} GiB are free on {device}. Lower {lower}")
