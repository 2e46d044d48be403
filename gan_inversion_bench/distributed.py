"""Multi-process runs: ``torchrun --nproc-per-node K -m gan_inversion_bench run ...``.

torchrun starts K processes (ranks) per node and sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``. The harness then (``docs/performance.md``, "Several GPUs or nodes"):

* gives every rank one device: ``cuda:LOCAL_RANK`` (NCCL) when the run's device is ``auto`` or
  ``cuda`` and CUDA is available, else the CPU (gloo);
* lets rank 0 alone take the run lock, open the database, save the targets and run each
  method's ``prepare``; the prepared method is broadcast to the other ranks, so every rank
  inverts with identical state (and the same method key);
* broadcasts, per method, the set of images the database already holds (resuming works as in
  a single process: nothing stored is recomputed) and shards the rest round-robin over ranks;
* advances in rounds: every rank inverts its next batch, the finished records (with the
  reconstructions as CPU tensors) are gathered on rank 0, which writes the PNGs and commits the
  rows, once each. A rank's error stops every rank with that message.

Every image is therefore inverted by exactly one rank and stored exactly once. Nodes need not
share a file system: only rank 0 writes (image sets given as folders must exist on every node).
With a single process (no ``WORLD_SIZE``, or 1) none of this is active and nothing is initialised.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import torch
import torch.distributed as dist

T = TypeVar("T")

#: collective timeout in seconds (a round waits for the slowest rank's batch); env GIB_DIST_TIMEOUT_S
DEFAULT_TIMEOUT_S = 24 * 3600


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives (identity functions in a single process) ----------------------------------
    @overload
    def broadcast(self, obj: None) -> Any: ...
    @overload
    def broadcast(self, obj: T | None) -> T: ...

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the other ranks' argument is ignored, so they pass None:
        ``broadcast(x if is_main else None)`` has the type of ``x``)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0; None on the other ranks."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (round-robin, so ranks get equal counts ± 1)."""
        return list(items[self.rank::self.world_size])


def from_env() -> DistInfo:
    """The torchrun environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), or a single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"invalid torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(world_size=world, rank=rank, local_rank=local)


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 (the rank that stores results and prints tables)."""
    return os.environ.get("RANK", "0") == "0"


def device_for(info: DistInfo, requested: str) -> torch.device:
    """The device of this rank for the run's ``--device`` setting (``auto``, ``cuda`` or ``cpu``)."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested in ("auto", "cuda"):
        if torch.cuda.is_available():
            if info.local_rank >= torch.cuda.device_count():
                raise ValueError(f"rank {info.rank}: LOCAL_RANK {info.local_rank} but only "
                                 f"{torch.cuda.device_count()} CUDA device(s) on this node; "
                                 "use fewer processes per node")
            return torch.device("cuda", info.local_rank)
        if requested == "cuda":
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
        return torch.device("cpu")
    raise ValueError(f"with several processes (torchrun) the device must be auto, cuda or cpu (each rank uses "
                     f"cuda:LOCAL_RANK or the CPU), got {requested!r}")


def init(info: DistInfo, device: torch.device) -> DistInfo:
    """Join the process group (NCCL for CUDA, gloo for the CPU) unless already joined."""
    if not info.enabled or dist.is_initialized():
        return info
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get("GIB_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    info.initialised_here = True
    return info


def shutdown(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()
        info.initialised_here = False


__all__ = ["DistInfo", "from_env", "is_main_process", "device_for", "init", "shutdown"]
