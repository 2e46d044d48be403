"""A run's restoration task (:mod:`gan_inversion_bench.tasks`): each target's observation, its
operator parameters (from the image's seed) and the region scored apart (the inpainting hole).

The items' ``image`` becomes the observation (what every method, warm-up, FLOP count and latency
measurement receives) and ``clean`` keeps the target that the metrics compare with. The
observations are saved as PNGs under ``observations/<task key>/`` (super-resolution: the small
image), so the report can show them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..imagesets import ImageSet
from ..tasks import ActiveTask, Reconstruct, Task
from .folder import prepare_file, save_png
from .provenance import image_seed


@dataclass
class TaskSetup:
    """The run's task; ``active`` is None for ``reconstruct`` (no operator: today's numbers exactly)."""

    task: Task
    active: ActiveTask | None = None
    regions: dict[str, torch.Tensor] = field(default_factory=dict)  # image id → [1, R, R] bool

    @property
    def folder(self) -> str:
        return f"observations/{self.task.key()}"


def observe(task: Task, images: ImageSet, run_seed: int) -> TaskSetup:
    """Replace every item's image by its observation (keeping the clean target in ``clean``)."""
    setup = TaskSetup(task)
    if isinstance(task, Reconstruct):
        return setup
    setup.active = ActiveTask(task, {})
    for it in images.items:
        clean = it.image if it.clean is None else it.clean
        params = task.params(clean, image_seed(run_seed, it.id))
        observation = task.observe(clean, params)
        setup.active.add(observation, params)
        region = task.region(params)
        if region is not None:
            setup.regions[it.id] = region.cpu()
        it.clean, it.image = clean, observation
    return setup


def save_observations(setup: TaskSetup, images: ImageSet, run_dir: Path) -> None:
    """The observations as PNGs, once per task (paths checked: a planted link is refused)."""
    if setup.active is None:
        return
    for it in images.items:
        path = prepare_file(run_dir, f"{setup.folder}/{it.id}.png")
        if not os.path.lexists(path):
            save_png(setup.task.shown(it.image), path)


__all__ = ["TaskSetup", "observe", "save_observations"]
