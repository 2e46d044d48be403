"""Restoration tasks: a degradation operator D applied to the clean target and inside the loss.

A task turns a clean target x (``[3, R, R]`` in [-1, 1]) into an observation y = D(x) and makes every
:class:`~gan_inversion_bench.losses.ReconstructionLoss` compare D(G(·)) with y, so a method restores
an image without knowing about tasks; the restored image is G(·), scored against the clean x.

| task | D(x) | observation y (what a method receives) |
|---|---|---|
| ``reconstruct`` | x | x (today's behaviour; no operator at all) |
| ``inpaint`` | m ⊙ x, m = 1 on kept pixels, 0 in the hole | m ⊙ x (hole at 0, mid-grey) |
| ``colourise`` | luma(x) in all three channels, ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B | D(x) |
| ``super-resolve`` | U(↓f(x)): ↓f antialiased bilinear downsampling, U nearest upsampling | D(x); shown: ↓f(x) |
| ``denoise`` | x | clip(x + 2σ·n, −1, 1), n ~ N(0, I) seeded per image; σ on the [0, 1] intensity scale |

↓f is a triangle filter spanning f pixels on each side (``F.interpolate(..., mode="bilinear",
antialias=True)``, which follows PIL's ``BILINEAR`` reduction). Super-resolution compares at full
size through nearest upsampling, which repeats every low-resolution
pixel f² times: the mean squared error of U(↓f G) against U(y↓) equals that of ↓f G against y↓
exactly. Masks (inpainting) and noise (denoising) depend only on the image's seed, so a batch gives
every image what it gets alone.

Inside a run the harness activates the task (:func:`activated`) with each image's operator
parameters, keyed by the observation's content; a loss built on targets looks its rows up
(:func:`degradation_for`), so batches, restarts (rows repeated image-major) and per-image execution
all find their own parameters. Targets that are no observation of the active task are refused.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: ITU-R BT.601 luma weights (R, G, B)
BT601 = (0.299, 0.587, 0.114)
MASKS = ("centre", "boxes", "strokes")


class TaskError(ValueError):
    """An impossible task setting or targets that are no observation of the active task."""


# ---- operators ------------------------------------------------------------------------------------------
def luma(x: Tensor) -> Tensor:
    """``[N, 3, H, W]`` → ``[N, 1, H, W]``: the BT.601 weighted sum of R, G, B (linear, so it works on
    [-1, 1] values directly and keeps them in [-1, 1])."""
    w = x.new_tensor(BT601).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def downsample(x: Tensor, factor: int) -> Tensor:
    """Antialiased bilinear downsampling by ``factor`` (a triangle filter spanning ``factor`` pixels on
    each side, PIL's ``BILINEAR`` reduction): ``[N, C, H, W]`` → ``[N, C, H/f, W/f]``."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // factor, w // factor), mode="bilinear", antialias=True, align_corners=False)


def upsample_nearest(x: Tensor, factor: int) -> Tensor:
    return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def box_mask(size: int, ratio: float) -> Tensor:
    """A centred square hole covering ``ratio`` of the image (side round(√ratio · size)); 1 = kept."""
    side = max(1, round(math.sqrt(ratio) * size))
    top = (size - side) // 2
    m = torch.ones(1, size, size)
    m[:, top:top + side, top:top + side] = 0
    return m


def random_boxes_mask(size: int, ratio: float, rng: np.random.Generator) -> Tensor:
    """Random rectangles (sides 1/8 to 1/3 of the image) until at least ``ratio`` is hidden."""
    hole = np.zeros((size, size), dtype=bool)
    lo, hi = max(1, size // 8), max(2, size // 3)
    while hole.mean() < ratio:
        h, w = rng.integers(lo, hi + 1, size=2)
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        hole[y:y + h, x:x + w] = True
    return torch.from_numpy(~hole).float()[None]


def strokes_mask(size: int, ratio: float, rng: np.random.Generator) -> Tensor:
    """Free-form strokes: random walks of a round brush (radius 1/32 to 1/16 of the image, steps of
    1/16 in random directions turning by up to 45°) until at least ``ratio`` is hidden."""
    hole = np.zeros((size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    step = max(1.0, size / 16)
    while hole.mean() < ratio:
        y, x = rng.uniform(0, size, size=2)
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(max(1.0, size / 32), max(1.5, size / 16))
        for _ in range(int(rng.integers(4, 12))):
            hole |= (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2
            angle += rng.uniform(-np.pi / 4, np.pi / 4)
            y, x = np.clip(y + step * np.sin(angle), 0, size - 1), np.clip(x + step * np.cos(angle), 0, size - 1)
    return torch.from_numpy(~hole).float()[None]


# ---- tasks ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A degradation. Subclasses define ``name``, their settings as dataclass fields (validated in
    ``__post_init__``), :meth:`params` (per image), :meth:`apply` and, where useful, :meth:`observe`,
    :meth:`shown` and :meth:`region`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> dict[str, Any]:
        """What the records store: the name, the settings and the operator's convention."""
        return {"name": self.name, "settings": self.settings(), "operator": self.description}

    def label(self) -> str:
        """A short readable label, e.g. ``inpaint (mask=centre, ratio=0.25)``."""
        s = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name} ({s})" if s else self.name

    def key(self) -> str:
        """A folder-safe identifier of the task and its settings."""
        blob = repr(sorted(self.settings().items())).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:8]}"

    def params(self, clean: Tensor, seed: int) -> dict[str, Tensor]:
        """Per-image operator parameters (a mask, a noise draw) from the image's seed."""
        return {}

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """D(x) for ``x`` ``[N, 3, R, R]`` with ``params`` stacked to N rows."""
        return x

    def observe(self, clean: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The observation y ``[3, R, R]`` of one clean image (default: D(x))."""
        return self.apply(clean[None], {k: v[None] for k, v in params.items()})[0]

    def shown(self, observation: Tensor) -> Tensor:
        """The observation as a viewer should see it (super-resolution: the small image)."""
        return observation

    def region(self, params: dict[str, Tensor]) -> Tensor | None:
        """``[1, R, R]`` bool: the pixels scored separately (the inpainting hole), or None."""
        return None


@dataclass(frozen=True)
class Reconstruct(Task):
    name: ClassVar[str] = "reconstruct"
    description: ClassVar[str] = "D = identity"


@dataclass(frozen=True)
class Inpaint(Task):
    mask: str = "centre"      # "centre" box, random "boxes" or free-form "strokes"
    ratio: float = 0.25       # fraction of the pixels in the hole (at least; boxes and strokes overshoot a little)

    name: ClassVar[str] = "inpaint"
    description: ClassVar[str] = "D(x) = m ⊙ x, m = 1 on kept pixels and 0 in the hole (filled with 0, mid-grey)"

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise TaskError(f"inpaint: mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool) or not 0 < self.ratio < 1:
            raise TaskError(f"inpaint: ratio (the fraction of pixels in the hole) must be in (0, 1), "
                            f"got {self.ratio!r}")

    def params(self, clean: Tensor, seed: int) -> dict[str, Tensor]:
        size = clean.shape[-1]
        rng = np.random.default_rng([seed, 0x1A9A])
        if self.mask == "centre":
            m = box_mask(size, self.ratio)
        elif self.mask == "boxes":
            m = random_boxes_mask(size, self.ratio, rng)
        else:
            m = strokes_mask(size, self.ratio, rng)
        return {"mask": m.to(clean.device)}

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return x * params["mask"].to(x.dtype)

    def region(self, params: dict[str, Tensor]) -> Tensor | None:
        return params["mask"] < 0.5


@dataclass(frozen=True)
class Colourise(Task):
    name: ClassVar[str] = "colourise"
    description: ClassVar[str] = "D(x) = luma(x) in R, G and B; luma = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601)"

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return luma(x).expand(-1, 3, -1, -1)


@dataclass(frozen=True)
class SuperResolve(Task):
    factor: int = 4           # 4 or 8

    name: ClassVar[str] = "super-resolve"
    description: ClassVar[str] = ("D(x) = U(↓f(x)): ↓f antialiased bilinear downsampling (torch interpolate, "
                                  "antialias=True: PIL's BILINEAR reduce), U nearest upsampling back")

    def __post_init__(self) -> None:
        if self.factor not in (2, 4, 8) or isinstance(self.factor, bool):
            raise TaskError(f"super-resolve: factor must be 2, 4 or 8, got {self.factor!r}")

    def params(self, clean: Tensor, seed: int) -> dict[str, Tensor]:
        if clean.shape[-1] % self.factor or clean.shape[-1] // self.factor < 2:
            raise TaskError(f"super-resolve: factor {self.factor} does not divide the resolution {clean.shape[-1]} "
                            f"into at least 2 pixels")
        return {}

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return upsample_nearest(downsample(x, self.factor), self.factor)

    def shown(self, observation: Tensor) -> Tensor:
        return observation[:, ::self.factor, ::self.factor]


@dataclass(frozen=True)
class Denoise(Task):
    sigma: float = 0.1        # noise standard deviation on the [0, 1] intensity scale (2σ on [-1, 1])

    name: ClassVar[str] = "denoise"
    description: ClassVar[str] = ("D = identity; y = clip(x + 2σ·n, -1, 1), n ~ N(0, I) seeded per image "
                                  "(σ on the [0, 1] intensity scale)")

    def __post_init__(self) -> None:
        if not isinstance(self.sigma, (int, float)) or isinstance(self.sigma, bool) or not 0 < self.sigma <= 1:
            raise TaskError(f"denoise: sigma (noise std on the [0, 1] scale) must be in (0, 1], got {self.sigma!r}")

    def params(self, clean: Tensor, seed: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(int(seed) ^ 0x5EED)
        return {"noise": torch.randn(clean.shape, generator=g).to(clean.device)}

    def observe(self, clean: Tensor, params: dict[str, Tensor]) -> Tensor:
        return (clean + 2 * self.sigma * params["noise"].to(clean)).clamp(-1, 1)


TASKS: dict[str, type[Task]] = {t.name: t for t in (Reconstruct, Inpaint, Colourise, SuperResolve, Denoise)}


def make_task(name: str, settings: dict[str, Any] | None = None) -> Task:
    """The task ``name`` with ``settings``; unknown names and settings are refused with the valid ones."""
    cls = TASKS.get(name)
    if cls is None:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(settings or {}) - set(valid))
    if unknown:
        raise TaskError(f"task {name!r} has no setting {', '.join(map(repr, unknown))}; "
                        f"its settings: {', '.join(valid) or 'none'}")
    return cls(**(settings or {}))


# ---- the active task, looked up by the loss -----------------------------------------------------------
def _row_key(row: Tensor) -> bytes:
    return hashlib.sha256(row.detach().float().cpu().contiguous().numpy().tobytes()).digest()


@dataclass
class ActiveTask:
    """A task and the operator parameters of each observation (by its content)."""

    task: Task
    rows: dict[bytes, dict[str, Tensor]]

    def add(self, observation: Tensor, params: dict[str, Tensor]) -> None:
        self.rows[_row_key(observation)] = {k: v.detach().cpu() for k, v in params.items()}

    def operator(self, targets: Tensor) -> Callable[[Tensor], Tensor]:
        """D for a batch whose rows are ``targets`` (observations of this task, in any order, repeated
        or not); a batch of k·B rows (several candidates per target, image-major) repeats each row's
        parameters k times."""
        found = []
        for i, row in enumerate(targets):
            p = self.rows.get(_row_key(row))
            if p is None:
                raise TaskError(f"target {i} of the batch is not an observation of the active task "
                                f"{self.task.label()}: a method must pass the targets it received to "
                                f"ReconstructionLoss unchanged")
            found.append(p)
        stacked = {k: torch.stack([p[k] for p in found]).to(targets.device) for k in (found[0] if found else {})}
        n, task = targets.shape[0], self.task

        def degrade(x: Tensor) -> Tensor:
            if x.shape[0] % n:
                raise TaskError(f"the degradation holds {n} targets but got {x.shape[0]} images")
            k = x.shape[0] // n
            return task.apply(x, {key: v.repeat_interleave(k, 0) for key, v in stacked.items()})

        return degrade


_ACTIVE: contextvars.ContextVar[ActiveTask | None] = contextvars.ContextVar("gib_task", default=None)


@contextlib.contextmanager
def activated(active: ActiveTask | None) -> Iterator[None]:
    """Make ``active`` the task every ReconstructionLoss built inside uses (None: no task)."""
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def degradation_for(targets: Tensor) -> Callable[[Tensor], Tensor] | None:
    """The active task's operator for a loss on ``targets``, or None outside a task (or for
    ``reconstruct``: the identity needs no operator, which keeps its numbers bit for bit)."""
    active = _ACTIVE.get()
    if active is None or isinstance(active.task, Reconstruct):
        return None
    return active.operator(targets)


__all__ = ["BT601", "MASKS", "TASKS", "ActiveTask", "Colourise", "Denoise", "Inpaint", "Reconstruct",
           "SuperResolve", "Task", "TaskError", "activated", "box_mask", "degradation_for", "downsample", "luma",
           "make_task", "random_boxes_mask", "strokes_mask", "upsample_nearest"]
