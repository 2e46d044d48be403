"""The benchmark harness: one generator × methods × one image set × settings → a run folder.

A run folder holds ``results.sqlite`` (every finished (method, image) result, see
:mod:`~gan_inversion_bench.store`), ``targets/`` and ``recon/<method_key>/`` PNGs, and a
``.lock`` file. Running the same configuration again resumes: finished pairs are skipped.

The package's modules, each with one job:

* :mod:`.config` — :class:`RunConfig`, building and validating methods through their contract,
  the run's identity by content (:func:`content_identity`);
* :mod:`.observe` — a restoration task's observations y = D(x) of the targets (:func:`observe`);
* :mod:`.costs`, :mod:`.trace` — compute budgets in seconds or FLOPs; quality along the way;
* :mod:`.context`, :mod:`.progress` — the typed run context; progress bars or plain lines;
* :mod:`.provenance` — device, library versions, code revision, perceptual weights, seeds;
* :mod:`.folder` — durable PNGs, the run lock, clean-up after a killed run, fault injection;
* :mod:`.timing` — timer, FLOPs around ``invert``, warm-up, batch sizing, out-of-memory back-off;
* :mod:`.records` — the self-describing result rows;
* :mod:`.invert` — one timed batch and storing it;
* :mod:`.orchestrate` — :func:`run`: lock, session, methods, rounds (also under ``torchrun``).
* :mod:`.stop` — ``gib stop``: a request file the run reads after each stored batch (a search, after each trial).
* :mod:`.status` — ``gib status``: whether runs are live, images stored of the set, time left.

``run``, ``run_method_key``, ``history_summary`` and ``resolved_split`` are imported on first use (PEP 562):
their modules pull in the metrics, and ``gib stop``/``gib status`` load this package without them (2.5 s
instead of 7.5 s on a 2-core CPU).

Faults, precision, compile, batch sizes and timing are described in ``docs/reliability.md``,
``docs/performance.md`` and ``docs/architecture.md``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    RunConfig,
    RunError,
    build_method,
    content_identity,
    default_methods,
    execution_options,
    validate,
)
from .folder import FAULT_EVENTS, KILL_ENV, check_writable, fault_point, run_lock, save_png
from .observe import observe
from .provenance import VERSIONED, code_revision, device_name, image_seed, library_versions, resolve_device
from .stop import EXIT_STOPPED, StopRequested
from .timing import (
    MEMORY_FRACTION,
    FlopCount,
    Timer,
    auto_batch_size,
    automatic_batch_size,
    batch_from_probe,
    batch_within,
    count_invert_flops,
    is_out_of_memory,
    smaller_batch,
    warm_up,
)

if TYPE_CHECKING:
    from .orchestrate import run, run_method_key
    from .records import history_summary, resolved_split

#: imported on first use: the orchestrator and the records pull in the metrics (torchmetrics, torchvision: seconds),
#: which ``gib stop`` and ``gib status`` (harness.stop, harness.status) do not need
_LAZY = {"run": ".orchestrate", "run_method_key": ".orchestrate", "history_summary": ".records",
         "resolved_split": ".records"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value

__all__ = ["default_methods", "batch_within",
    "EXIT_STOPPED", "FAULT_EVENTS", "KILL_ENV", "MEMORY_FRACTION", "VERSIONED", "FlopCount", "RunConfig", "RunError",
    "StopRequested", "Timer",
    "auto_batch_size", "automatic_batch_size", "batch_from_probe", "build_method", "check_writable",
    "code_revision", "content_identity", "count_invert_flops", "device_name", "execution_options", "fault_point",
    "history_summary", "image_seed", "is_out_of_memory", "library_versions", "observe", "resolve_device",
    "resolved_split", "run", "run_lock", "run_method_key", "save_png", "smaller_batch", "validate", "warm_up",
]
