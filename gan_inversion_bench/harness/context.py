"""The typed state of a run that the harness's modules pass around."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..distributed import DistInfo
from ..generator import SplitGenerator
from ..imagesets import ImageSet
from ..precision import ExecutionOptions
from ..store import ResultStore
from ..tasks import Reconstruct
from .config import RunConfig
from .observe import TaskSetup
from .records import Provenance

Echo = Callable[[str], None]


@dataclass
class RunContext:
    """One process's view of a run (replaces a dict of loosely named values)."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    dist: DistInfo
    echo: Echo
    progress: bool
    store: ResultStore | None = None
    session: int = 0


@dataclass
class RunSetup:
    """What every method of the run shares once the generator and the images are loaded."""

    generator: SplitGenerator
    images: ImageSet
    options: ExecutionOptions
    prov: Provenance
    task: TaskSetup = field(default_factory=lambda: TaskSetup(Reconstruct()))
