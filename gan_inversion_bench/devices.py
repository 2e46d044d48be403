"""The devices this toolkit runs on, resolved from what a user typed (``--device``, ``GIB_TEST_DEVICE``)."""
from __future__ import annotations

import torch


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use (``AVX2``, ``AVX512``, …; ``torch.backends.cpu``), or ''."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else
    (``mps``, ``xla``, ``meta``, an index beyond the GPUs present, a typo) is refused with a message
    that says what this machine offers (a ValueError)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    offered = "cpu, auto" + (", cuda" + "".join(f", cuda:{i}" for i in range(n)) if n else "")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        why = str(e).splitlines()[0]
        raise ValueError(f"invalid device {name!r} ({why}); this machine offers: {offered}") from None
    if dev.type == "cuda":
        if not n:
            raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {name!r}: this machine has {n} CUDA device(s) (cuda:0 … cuda:{n - 1}); "
                             f"offered: {offered}")
        return dev
    if dev.type != "cpu":
        why = {"meta": "the meta device holds no data, so nothing can be inverted on it",
               "mps": "Apple's MPS backend is not supported by this toolkit (it was never tested there)",
               "xla": "XLA/TPU devices are not supported"}.get(dev.type, f"device type {dev.type!r} is not supported")
        raise ValueError(f"device {name!r}: {why}; this machine offers: {offered}")
    return dev
