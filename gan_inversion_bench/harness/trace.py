"""Quality along the way: per-image MSE/PSNR (and LPIPS at a few points) at log-spaced
iterations, with the elapsed time and the FLOPs spent, so that one run answers quality at equal
iterations, at equal time, at equal FLOPs, and the time to reach a given PSNR.

Methods report through :func:`gan_inversion_bench.method_tools.trace_point` (``optimise`` does it
for the methods that pass a ``snapshot``); the harness installs a :class:`TraceRecorder` around
each timed ``invert``. A snapshot costs one generator forward pass (and LPIPS where asked); that
time is measured and subtracted from both the trace's elapsed times and the batch time, so
tracing does not change the reported speed. Elapsed time and FLOPs are per image (the batch's
divided by its number of rows); FLOPs at iteration t are ``fixed + t · per_iteration`` from the
harness's FLOP count.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..metrics import lpips, mse, psnr
from .timing import FlopCount

#: LPIPS is computed at this many of the last trace points (it costs an AlexNet pass per image)
LPIPS_POINTS = 3


def trace_points(budget: int) -> list[int]:
    """0, 1, 2, 4, … (powers of two below ``budget``) and ``budget`` itself."""
    points, p = [0], 1
    while p < budget:
        points.append(p)
        p *= 2
    return [*points, budget]


class TraceRecorder:
    """The sink of :func:`~gan_inversion_bench.method_tools.tracing` for one timed batch."""

    def __init__(self, targets: Tensor, budget: int, flops: FlopCount | None):
        self.targets = targets  # [N, 3, R, R] in [-1, 1], one row per inversion (image × restart)
        self.points = set(trace_points(budget))
        self.lpips_points = set(sorted(self.points)[-LPIPS_POINTS:])
        self.flops = flops
        self.overhead = 0.0  # seconds spent in snapshots and metrics (subtracted from every time)
        self.start = time.perf_counter()
        self.log: list[dict[str, Any]] = []

    def begin(self) -> None:
        """Start the clock (just before ``invert``)."""
        self.overhead, self.log = 0.0, []
        self._sync()
        self.start = time.perf_counter()

    def _sync(self) -> None:
        if self.targets.device.type == "cuda":
            torch.cuda.synchronize(self.targets.device)

    def __call__(self, iteration: int, snapshot: Callable[[], Tensor]) -> None:
        if iteration not in self.points or any(e["iteration"] == iteration for e in self.log):
            return
        self._sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            rec = snapshot().detach().float().clamp(-1, 1)
            if rec.shape != self.targets.shape:
                raise ValueError(f"trace snapshot has shape {list(rec.shape)}, expected the targets' "
                                 f"{list(self.targets.shape)} (the method's snapshot must return its reconstructions)")
            entry: dict[str, Any] = {"iteration": iteration, "seconds": (t0 - self.start - self.overhead),
                                     "mse": mse(rec, self.targets).tolist(), "psnr": psnr(rec, self.targets).tolist()}
            if iteration in self.lpips_points:
                entry["lpips"] = lpips(rec, self.targets).tolist()
        self._sync()
        self.overhead += time.perf_counter() - t0
        self.log.append(entry)

    def for_row(self, row: int) -> dict[str, Any] | None:
        """The trace of inversion ``row``: lists over the trace points (LPIPS: a dict by iteration)."""
        if not self.log:
            return None
        n = self.targets.shape[0]
        log = sorted(self.log, key=lambda e: e["iteration"])
        out: dict[str, Any] = {
            "iteration": [e["iteration"] for e in log],
            "seconds": [e["seconds"] / n for e in log],
            "mse": [e["mse"][row] for e in log],
            "psnr": [e["psnr"][row] for e in log],
            "lpips": {str(e["iteration"]): e["lpips"][row] for e in log if "lpips" in e},
        }
        if self.flops is not None:
            out["flops"] = [self.flops.total(e["iteration"]) for e in log]
        return out
