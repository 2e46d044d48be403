"""Performance accounting: FLOPs per iteration, peak throughput of known devices, and the
regression comparison behind ``gib bench-compare``.

Regression rules (a new benchmark run against a stored baseline, benchmark by benchmark):

* **time**: a regression when the new *minimum* time exceeds the baseline minimum by more than
  ``time_rel`` (relative) **and** by more than ``noise_k`` times the baseline's spread
  (max of its IQR and standard deviation), so noisy benchmarks need a larger change to fail;
* **quality**: PSNR lower by more than ``psnr_tol`` dB, or LPIPS higher by more than
  ``lpips_tol``, after the same fixed seeded budget (stored in each benchmark's ``extra_info``);
* a benchmark present in the baseline but missing from the new run is reported (not a failure
  unless ``strict``).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

#: dense peak TFLOP/s by device-name substring and precision (vendor datasheets, no sparsity)
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},  # SXM5
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0},
    "V100": {"fp32": 15.7, "tf32": 15.7, "bf16": 125.0},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2},
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s for a device name and precision ('fp32', 'tf32', 'bf16'), or None."""
    for key, table in PEAK_TFLOPS.items():  # order matters: "H100 PCIe" before "H100"
        if key in device_name:
            return table.get(precision)
    return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (forward and backward), with ``torch.utils.flop_counter``'s formulas.

    A plain dispatch-mode counter: ``FlopCounterMode`` also tracks modules with autograd hooks,
    which fails on modules called under ``no_grad`` with inputs that require grad.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                type(self).total += int(formula(*args, **kwargs, out_val=out))
            return out

    with _Counter():
        fn()
    return _Counter.total


_iteration_flops: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("gib_iteration_flops",
                                                                                   default=None)


@contextlib.contextmanager
def record_iteration_flops() -> Iterator[list[float]]:
    """Inside, the first :func:`~gan_inversion_bench.method.optimise` loop counts the FLOPs of its
    first iteration (forward, backward and optimiser step, per image) and appends them to the
    yielded list. Methods with their own loop report nothing (the list stays empty)."""
    sink: list[float] = []
    token = _iteration_flops.set(sink)
    try:
        yield sink
    finally:
        _iteration_flops.reset(token)


def iteration_flops_wanted() -> bool:
    sink = _iteration_flops.get()
    return sink is not None and not sink


def report_iteration_flops(flops_per_image: float) -> None:
    sink = _iteration_flops.get()
    if sink is not None and not sink:
        sink.append(float(flops_per_image))


def achieved(flops_per_iteration: float | None, iterations: int, images: int, seconds: float, device_name: str,
             precision: str) -> tuple[float | None, float | None]:
    """(achieved TFLOP/s, fraction of the device's dense peak or None) of a timed batch."""
    if not flops_per_iteration or seconds <= 0:
        return None, None
    tflops = flops_per_iteration * iterations * images / seconds / 1e12
    peak = peak_tflops(device_name, precision)
    return tflops, (tflops / peak if peak else None)


def machine_id() -> str:
    """A file-name-safe name for this kind of machine, for ``benchmarks/baselines/<machine>.json``:
    the CUDA device name, or ``cpu-<arch>-<n>c`` (``GIB_MACHINE`` overrides it)."""
    override = os.environ.get("GIB_MACHINE")
    if override:
        name = override
    else:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            cuda = False
        if cuda:
            name = "cuda-" + torch.cuda.get_device_name(0)
        else:
            name = f"cpu-{platform.machine()}-{os.cpu_count()}c"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-").lower()


@dataclass
class Finding:
    benchmark: str
    kind: str          # "time", "psnr", "lpips", "missing"
    baseline: float | None
    new: float | None
    regression: bool
    detail: str

    def line(self) -> str:
        flag = "REGRESSION" if self.regression else "ok"
        return f"{flag:<10} {self.kind:<7} {self.benchmark}: {self.detail}"


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["fullname"].split("::")[-1]: b for b in data.get("benchmarks", [])}


def load_benchmark_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable pytest-benchmark JSON file ({e})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return data


def compare(new: dict[str, Any], baseline: dict[str, Any], *, time_rel: float = 0.25, noise_k: float = 3.0,
            psnr_tol: float = 0.1, lpips_tol: float = 0.005, strict: bool = False) -> list[Finding]:
    """Compare two pytest-benchmark results; see the module docstring for the rules."""
    findings = []
    new_b, base_b = _by_name(new), _by_name(baseline)
    for name, base in sorted(base_b.items()):
        if name not in new_b:
            findings.append(Finding(name, "missing", None, None, strict, "in the baseline, not in the new run"))
            continue
        cur = new_b[name]
        b_min, n_min = base["stats"]["min"], cur["stats"]["min"]
        spread = max(base["stats"].get("iqr") or 0.0, base["stats"].get("stddev") or 0.0)
        slower = n_min - b_min
        regression = n_min > b_min * (1 + time_rel) and slower > noise_k * spread
        findings.append(Finding(name, "time", b_min, n_min, regression,
                                f"min {n_min * 1e3:.1f} ms vs {b_min * 1e3:.1f} ms ({(n_min / b_min - 1) * 100:+.0f} %, "
                                f"limit +{time_rel * 100:.0f} % and > {noise_k:g}×spread {spread * 1e3:.1f} ms)"))
        b_info, n_info = base.get("extra_info", {}), cur.get("extra_info", {})
        if "psnr" in b_info and "psnr" in n_info:
            d = n_info["psnr"] - b_info["psnr"]
            findings.append(Finding(name, "psnr", b_info["psnr"], n_info["psnr"], d < -psnr_tol,
                                    f"{n_info['psnr']:.3f} dB vs {b_info['psnr']:.3f} dB ({d:+.3f}, tolerance {psnr_tol})"))
        if "lpips" in b_info and "lpips" in n_info:
            d = n_info["lpips"] - b_info["lpips"]
            findings.append(Finding(name, "lpips", b_info["lpips"], n_info["lpips"], d > lpips_tol,
                                    f"{n_info['lpips']:.4f} vs {b_info['lpips']:.4f} ({d:+.4f}, tolerance {lpips_tol})"))
    return findings
