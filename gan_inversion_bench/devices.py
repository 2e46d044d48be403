"""The devices this toolkit runs on, resolved from what a user typed (``--device``, ``GIB_TEST_DEVICE``)."""
from __future__ import annotations

import os
import sys

import torch


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use (``AVX2``, ``AVX512``, …; ``torch.backends.cpu``), or ''."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


#: for each kernel kind torch reports, the environment that caps a fresh process at it: ATen's own
#: kernels, oneDNN's (convolutions) and MKL's (matrix products) each choose their instruction set once,
#: when first used, from these variables
KERNEL_ENV = {"AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
              "AVX512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                         "MKL_ENABLE_INSTRUCTIONS": "AVX512"}}


def kernel_env(kernels: str) -> dict[str, str]:
    """The environment variables under which a new Python process runs torch's CPU kernels of kind
    ``kernels`` (``AVX2``, ``AVX512``) on a CPU that has them (a CPU with AVX-512 can run the AVX2
    ones, not the other way round). A halving search tuned with AVX2 kernels takes the same path on
    an AVX-512 CPU only under these, to the same settings, though not to every bit of its values (MKL
    and oneDNN still choose code for the CPU; README, "Tuned settings"). Raises ValueError for another kind."""
    if kernels not in KERNEL_ENV:
        raise ValueError(f"CPU kernels {kernels!r}: expected one of {', '.join(KERNEL_ENV)}")
    return dict(KERNEL_ENV[kernels])


#: set in the process :func:`rerun_with_kernels` starts, so that it never starts another
_CAPPED = "GIB_CPU_KERNELS_CAPPED"


def rerun_with_kernels(kernels: str, argv: list[str]) -> None:
    """Make the ``gib`` command ``argv`` (its arguments, without the program) run on ``kernels``:
    return at once when torch already uses them; else replace this process by the same command
    in a new one whose environment caps torch at them (:func:`kernel_env`). In that new process,
    torch still reporting other kernels means this CPU lacks ``kernels``: a ValueError that says so."""
    here = cpu_capability()
    if here == kernels:
        return
    env = kernel_env(kernels)
    if os.environ.get(_CAPPED) == kernels:
        raise ValueError(f"--cpu-kernels {kernels}: torch still uses {here or 'unknown'} kernels with "
                         f"{' '.join(f'{k}={v}' for k, v in env.items())}; this CPU cannot run {kernels} kernels "
                         f"(a CPU runs its own kind and the ones before it: AVX-512 can run AVX2, not the reverse)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "gan_inversion_bench", *argv],
              {**os.environ, **env, _CAPPED: kernels})


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
