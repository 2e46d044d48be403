"""Inverting one batch (timed, at the run's precision and compile mode) and storing its rows."""
from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Any

import torch

from ..generator import conditioned
from ..imagesets import ImageItem
from ..method import InversionFailed, InversionResult
from ..method_tools import tracing
from ..metrics import DEFAULT_METRICS, compute_metrics, region_metrics
from ..precision import execution_context
from ..store import ResultStore
from .context import RunContext, RunSetup
from .folder import fault_point, prepare_file, save_png, writing_into
from .progress import progress_for
from .provenance import image_seed, perceptual_provenance
from .records import BatchOutcome, MethodPlan, batch_rows
from .timing import Timer, item_conditions
from .trace import TraceRecorder


def restart_seed(seed: int, k: int) -> int:
    """Restart ``k`` of an image whose seed is ``seed``; restart 0 is the image's own seed, so a
    run with one restart is exactly a run without restarts."""
    return seed if k == 0 else zlib.crc32(f"{seed}:restart:{k}".encode()) & 0x7FFFFFFF


def invert_batch(rc: RunContext, setup: RunSetup, plan: MethodPlan, batch: list[ImageItem],
                 note: str = "") -> list[dict[str, Any]]:
    """Invert one batch (each image ``restarts`` times, as rows of one call); the rows carry their
    reconstruction (``_png``) until :func:`store_rows`."""
    k = rc.config.restarts
    targets = torch.stack([it.image for it in batch]).to(rc.device).repeat_interleave(k, 0)  # [B·K, 3, R, R]
    clean = _clean_targets(batch, rc.device).repeat_interleave(k, 0)  # what the metrics compare with
    seeds = [restart_seed(image_seed(rc.config.seed, it.id), j) for it in batch for j in range(k)]
    classes = item_conditions(setup.generator, batch, rc.device)  # per-image classes, conditional generators
    classes = None if classes is None else classes.repeat_interleave(k, 0)
    budget = plan.method.budget
    recorder = TraceRecorder(clean, budget, plan.flops) if budget and not plan.per_image else None
    bar = progress_for(f"{plan.method.name} [{batch[0].id} … {batch[-1].id}]", rc.progress)
    result: InversionResult | None = None
    failure = None
    try:
        with Timer(rc.device) as timer, execution_context(plan.options, rc.device), \
                conditioned(setup.generator, classes), tracing(recorder) if recorder else contextlib.nullcontext():
            if recorder:
                recorder.begin()
            result = plan.method.invert(setup.generator, targets, seeds=seeds, progress=bar.update if bar else None)
    except InversionFailed as e:
        failure = f"every image of the batch failed: {e}"
    finally:
        if bar:
            bar.close()
    fault_point("inverted")
    outcome = BatchOutcome(batch, seeds, result, failure, timer, note=note, conditions=classes, restarts=k,
                           trace=recorder)
    if result is not None:
        recon = result.reconstructions.float().clamp(-1, 1)
        outcome.metrics = compute_metrics(recon, clean, names=[*DEFAULT_METRICS, "ms_ssim"])
        if setup.task.regions:
            region = torch.stack([setup.task.regions[it.id] for it in batch]).repeat_interleave(k, 0)
            outcome.metrics.update(region_metrics(recon, clean, region))
    return batch_rows(plan, outcome, setup.prov, perceptual_provenance())


def _clean_targets(batch: list[ImageItem], device: torch.device) -> torch.Tensor:
    """The clean targets of a batch (under a task the items' ``image`` is the observation)."""
    return torch.stack([it.image if it.clean is None else it.clean for it in batch]).to(device)


def store_rows(rows: list[dict[str, Any]], store: ResultStore, run_dir: Path) -> None:
    """Write each ok row's reconstruction PNG, then commit the rows in one transaction. The PNG's path
    is checked first (:func:`~.folder.prepare_file`): a symbolic link on the way (e.g. a planted
    ``recon/<key>`` folder or PNG) is refused, never written through."""
    for row in rows:
        image = row.pop("_png", None)
        if image is not None:
            with writing_into(run_dir):
                save_png(image, prepare_file(run_dir, row["recon_path"]))
    with writing_into(run_dir):
        store.add_results(rows)
    fault_point("committed")
