"""The self-describing record of one (method, image) result.

Every row carries what is needed to interpret its numbers without the code that made it: the
method's name, version and settings, the resolved split point, what ``prepare`` learned, the
generator, the metric conventions, the perceptual networks' weight provenance, the versions of
every library that can change a number, the device, the timer, the batch size and the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..generator import describe_condition
from ..imagesets import ImageItem
from ..method import InversionMethod, InversionResult
from ..perf import achieved
from ..precision import ExecutionOptions
from ..store import now
from .timing import FlopCount, Timer
from .trace import TraceRecorder


@dataclass(frozen=True)
class Provenance:
    """What every record of a run shares."""

    generator: dict[str, Any]
    device: str
    versions: dict[str, str]
    code_revision: str
    metric_conventions: dict[str, str]
    image_set: str
    session: int
    task: dict[str, Any] | None = None  # the restoration task (tasks.Task.describe); None: reconstruct


@dataclass
class MethodPlan:
    """One method's part of a run: the prepared instance, its result key and how it executes."""

    method: InversionMethod
    key: str
    options: ExecutionOptions
    split: dict[str, Any] | None
    flops: FlopCount | None = None
    per_image: bool = False   # the seeds' per-image pattern: batches of one, fp32, uncompiled
    budget_info: dict[str, Any] | None = None  # a compute budget: the limits and which one was binding


@dataclass
class BatchOutcome:
    """What inverting one batch gave: the result (or the reason every image failed) and its timing."""

    items: list[ImageItem]
    seeds: list[int]
    result: InversionResult | None
    failure: str | None
    timer: Timer
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    note: str = ""
    conditions: torch.Tensor | None = None  # [B·K, C] per-row class vectors (conditional generators)
    restarts: int = 1                       # K: rows i·K … i·K+K-1 are image i's restarts
    trace: TraceRecorder | None = None      # quality along the way (None: not traced)


def resolved_split(method: InversionMethod, generator: Any) -> dict[str, Any] | None:
    """The split point the method uses on ``generator`` (index, name, feature shape), or None."""
    index = method.resolved_split(generator)
    if index is None:
        return None
    point = generator.split_points[index]
    return {"index": index, "name": point.name, "shape": list(point.shape)}


def history_summary(history: torch.Tensor, column: int, points: int = 200) -> dict[str, list[Any]]:
    t = history.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(points, t)).round().astype(int))
    vals = history[idx, column].tolist()
    return {"iteration": idx.tolist(), "loss": [None if v != v else float(v) for v in vals]}


def finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _timing(plan: MethodPlan, outcome: BatchOutcome, device: str) -> dict[str, Any]:
    """Time per image (all its restarts; trace snapshots subtracted), memory, throughput."""
    n, rows, timer, options = len(outcome.items), len(outcome.seeds), outcome.timer, plan.options
    seconds = timer.seconds - (outcome.trace.overhead if outcome.trace is not None else 0.0)
    flops = plan.flops
    work, iters = (None, 0) if flops is None else (
        (flops.per_iteration, plan.method.budget or 0) if flops.per_iteration is not None else (flops.fixed, 1))
    tflops, fraction = achieved(work, iters, rows, seconds, device, options.precision)
    how = "" if options.is_default() else f", {options.describe()}"
    how += f", {outcome.restarts} restarts per image" if outcome.restarts > 1 else ""
    return {"time_s": seconds / n, "peak_mem_mb": timer.peak_mb, "mem_kind": timer.mem_kind,
            "timer": f"{timer.kind}, batch of {n}{how}" + (f" ({outcome.note})" if outcome.note else ""),
            "precision": options.precision, "tflops": tflops, "peak_fraction": fraction,
            "flops_per_iteration": None if flops is None else flops.per_iteration,
            "flops_fixed": None if flops is None else flops.fixed}


def batch_rows(plan: MethodPlan, outcome: BatchOutcome, prov: Provenance, perceptual: dict[str, Any]) -> list[
        dict[str, Any]]:
    """One row per image of the batch; ok rows carry their reconstruction (``_png``) until stored."""
    timing = _timing(plan, outcome, prov.device)
    return [_row(plan, outcome, i, prov, {**timing, "perceptual": perceptual}) for i in range(len(outcome.items))]


def _final_loss(outcome: BatchOutcome, r: int) -> float | None:
    result = outcome.result
    if result is None or not result.loss_history.shape[0]:
        return None
    return finite(result.loss_history[-1, r].item())


def best_restart(outcome: BatchOutcome, i: int) -> tuple[int, str | None]:
    """(row of image ``i``'s best restart, or of its first; the failure reason if every restart
    failed). Best = lowest final loss, the method's own objective (never the metrics)."""
    k, result = outcome.restarts, outcome.result
    rows = range(i * k, i * k + k)
    if outcome.failure or result is None:
        return rows[0], outcome.failure or "no result"
    ok = [r for r in rows if r not in result.failures]
    if not ok:
        if k == 1:
            return rows[0], result.failures[rows[0]]
        return rows[0], "; ".join(f"restart {r - i * k}: {result.failures[r]}" for r in rows)
    losses = {r: _final_loss(outcome, r) for r in ok}
    return min(ok, key=lambda r: (losses[r] is None, losses[r] or 0.0, r)), None


def _restart_summary(outcome: BatchOutcome, i: int, best: int) -> dict[str, Any]:
    k = outcome.restarts
    rows = list(range(i * k, i * k + k))
    failed = outcome.result.failures if outcome.result is not None else {}
    out: dict[str, Any] = {"k": k, "best": best - i * k, "seeds": [outcome.seeds[r] for r in rows],
                           "final_loss": [_final_loss(outcome, r) for r in rows],
                           "failed": [r - i * k for r in rows if r in failed]}  # their metrics: the last finite iterate
    for name, v in outcome.metrics.items():
        out[name] = [finite(v[r].item()) for r in rows]
    return out


def _row(plan: MethodPlan, outcome: BatchOutcome, i: int, prov: Provenance, extra: dict[str, Any]) -> dict[str, Any]:
    m, item, result = plan.method, outcome.items[i], outcome.result
    r, reason = best_restart(outcome, i)
    row: dict[str, Any] = {
        "method_key": plan.key, "image_id": item.id, "method": m.name, "method_version": m.version,
        "image_set": prov.image_set, "iterations": m.budget, "seed": outcome.seeds[i * outcome.restarts],
        "batch_size": len(outcome.items), "device": prov.device, "generator": prov.generator, "split": plan.split,
        "method_settings": m.get_settings(), "prepared": m.prepared_state(),
        "metric_conventions": prov.metric_conventions, "versions": prov.versions,
        "code_revision": prov.code_revision, "session": prov.session, "created": now(), **extra,
        "condition": None if outcome.conditions is None else describe_condition(outcome.conditions[r]),
        "capacity": m.capacity(), "trace": outcome.trace.for_row(r) if outcome.trace is not None else None,
        "restarts": _restart_summary(outcome, i, r) if outcome.restarts > 1 else None,
        "budget": plan.budget_info, "task": prov.task,
    }
    history = result.loss_history if result is not None and result.loss_history.shape[0] else None
    if history is not None:  # a method without a loop (an encoder) has no history
        row["loss_history"] = history_summary(history, r)
    if result is not None and reason is None:
        row.update(status="ok", recon_path=str(Path("recon") / plan.key / f"{item.id}.png"),
                   _png=result.reconstructions[r].detach().float().cpu(), final_loss=_final_loss(outcome, r),
                   **{k: finite(v[r].item()) for k, v in outcome.metrics.items()})
    else:
        row.update(status="failed", reason=reason)
    return row
