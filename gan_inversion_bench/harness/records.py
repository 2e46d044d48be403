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


@dataclass
class MethodPlan:
    """One method's part of a run: the prepared instance, its result key and how it executes."""

    method: InversionMethod
    key: str
    options: ExecutionOptions
    split: dict[str, Any] | None
    flops: FlopCount | None = None
    per_image: bool = False   # the seeds' per-image pattern: batches of one, fp32, uncompiled


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
    conditions: torch.Tensor | None = None  # [B, C] per-image class vectors (conditional generators)


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
    n, timer, options = len(outcome.items), outcome.timer, plan.options
    flops = plan.flops
    work, iters = (None, 0) if flops is None else (
        (flops.per_iteration, plan.method.budget or 0) if flops.per_iteration is not None else (flops.fixed, 1))
    tflops, fraction = achieved(work, iters, n, timer.seconds, device, options.precision)
    how = "" if options.is_default() else f", {options.describe()}"
    return {"time_s": timer.seconds / n, "peak_mem_mb": timer.peak_mb, "mem_kind": timer.mem_kind,
            "timer": f"{timer.kind}, batch of {n}{how}" + (f" ({outcome.note})" if outcome.note else ""),
            "precision": options.precision, "tflops": tflops, "peak_fraction": fraction,
            "flops_per_iteration": None if flops is None else flops.per_iteration,
            "flops_fixed": None if flops is None else flops.fixed}


def batch_rows(plan: MethodPlan, outcome: BatchOutcome, prov: Provenance, perceptual: dict[str, Any]) -> list[
        dict[str, Any]]:
    """One row per image of the batch; ok rows carry their reconstruction (``_png``) until stored."""
    timing = _timing(plan, outcome, prov.device)
    return [_row(plan, outcome, i, prov, {**timing, "perceptual": perceptual}) for i in range(len(outcome.items))]


def _row(plan: MethodPlan, outcome: BatchOutcome, i: int, prov: Provenance, extra: dict[str, Any]) -> dict[str, Any]:
    m, item, result = plan.method, outcome.items[i], outcome.result
    row: dict[str, Any] = {
        "method_key": plan.key, "image_id": item.id, "method": m.name, "method_version": m.version,
        "image_set": prov.image_set, "iterations": m.budget, "seed": outcome.seeds[i],
        "batch_size": len(outcome.items), "device": prov.device, "generator": prov.generator, "split": plan.split,
        "method_settings": m.get_settings(), "prepared": m.prepared_state(),
        "metric_conventions": prov.metric_conventions, "versions": prov.versions,
        "code_revision": prov.code_revision, "session": prov.session, "created": now(), **extra,
        "condition": None if outcome.conditions is None else describe_condition(outcome.conditions[i]),
    }
    reason = outcome.failure or (result.failures.get(i) if result is not None else None)
    history = result.loss_history if result is not None and result.loss_history.shape[0] else None
    if history is not None:  # a method without a loop (an encoder) has no history
        row["loss_history"] = history_summary(history, i)
    if result is not None and reason is None:
        row.update(status="ok", recon_path=str(Path("recon") / plan.key / f"{item.id}.png"),
                   _png=result.reconstructions[i].detach().float().cpu(),
                   final_loss=None if history is None else finite(history[-1, i].item()),
                   **{k: finite(v[i].item()) for k, v in outcome.metrics.items()})
    else:
        row.update(status="failed", reason=reason)
    return row
