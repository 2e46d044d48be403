"""Performance accounting: FLOPs per iteration, peak throughput of known devices, and the
regression comparison behind ``gib bench-compare``.

Regression rules (a new benchmark run against a stored baseline, benchmark by benchmark):

* **time**: a regression when the new *minimum* time exceeds the baseline minimum by more than
  ``time_rel`` (relative) **and** by more than ``noise_k`` times the baseline's spread
  (max of its IQR and standard deviation), so noisy benchmarks need a larger change to fail;
* **quality**: PSNR lower by more than ``psnr_tol`` dB, or LPIPS higher by more than
  ``lpips_tol``, after the same fixed seeded budget (stored in each benchmark's ``extra_info``);
* a benchmark present in the baseline but missing from the new run is reported (not a failure
  unless ``strict``), and so is one in the new run that the baseline lacks (never a failure: there
  is nothing to compare it with until the baseline is re-recorded).

**Machine calibration.** When both runs hold the calibration benchmark (``CALIBRATION``:
``benchmarks/test_calibration.py``, a fixed torch workload timed at the start and the end of the
suite), every new time is divided by the machine factor, the ratio of the new run's calibration
minima to the baseline's (summed over the positions both runs have), before the time rule is
applied; the calibration itself is reported, never a failure. A runner that is slower at
everything passes; a benchmark that became slower *relative to plain torch* still fails. Without
a calibration in both runs (or with ``calibrate=False``) absolute times are compared.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the name of the machine-calibration benchmark (``benchmarks/test_calibration.py``)
CALIBRATION = "test_machine_calibration"

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

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                type(self).total += int(formula(*args, **kwargs, out_val=out))
            return out

    with _Counter():  # type: ignore[no-untyped-call]  # the inherited TorchDispatchMode.__init__ is unannotated
        fn()
    return _Counter.total


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
    the CUDA device name, or ``cpu-<arch>-<kernels>-<n>c`` with the vector instructions torch's CPU
    kernels use (``avx512``, ``avx2``, …: the same 2-core runner type came with either, and the
    AVX2 one is 2.6-3.5× slower on this suite), ``GIB_MACHINE`` overrides it."""
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
            from .devices import cpu_capability

            name = f"cpu-{platform.machine()}-{cpu_capability().lower() or 'unknown'}-{os.cpu_count()}c"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-").lower()


@dataclass
class Finding:
    benchmark: str
    kind: str          # "time", "psnr", "lpips", "missing", "new", "machine"
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
    """A pytest-benchmark JSON file, every entry checked (:func:`entry_problem`): a ValueError names the file,
    the entry and what was expected."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable pytest-benchmark JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    for i, entry in enumerate(data["benchmarks"]):
        problem = entry_problem(entry)
        if problem:
            name = entry.get("fullname") if isinstance(entry, dict) else None
            raise ValueError(f"{path}: benchmark {i}{f' ({name})' if isinstance(name, str) else ''}: {problem}")
    return data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def entry_problem(entry: Any) -> str:
    """What is wrong with one benchmark of a pytest-benchmark file for :func:`compare` ("" if nothing): it needs a
    ``fullname``, a positive ``stats.min`` (seconds; times are divided by it), a spread (``iqr``, ``stddev``) that
    is absent or >= 0, and numbers for the ``extra_info`` it compares (``psnr``, ``lpips``)."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, found {json.dumps(entry)[:60]}"
    stats, info = entry.get("stats"), entry.get("extra_info", {})
    if not isinstance(entry.get("fullname"), str) or not entry["fullname"]:
        return "no 'fullname' (the test's id, a string)"
    if not isinstance(stats, dict) or not _number(stats.get("min")) or stats["min"] <= 0:
        found = stats.get("min") if isinstance(stats, dict) else stats
        return f"'stats.min' must be a positive finite number of seconds, found {json.dumps(found)[:60]}"
    for key in ("iqr", "stddev"):
        if stats.get(key) is not None and not (_number(stats[key]) and stats[key] >= 0):
            return f"'stats.{key}' must be a finite number >= 0 (or absent), found {json.dumps(stats[key])[:60]}"
    if not isinstance(info, dict):
        return f"'extra_info' must be a JSON object, found {json.dumps(info)[:60]}"
    bad = [k for k in ("psnr", "lpips") if k in info and not _number(info[k])]
    return f"'extra_info.{bad[0]}' must be a finite number, found {json.dumps(info[bad[0]])[:60]}" if bad else ""


@dataclass(frozen=True)
class Limits:
    """The regression rules' thresholds (module docstring); ``gib bench-compare``'s options."""

    time_rel: float = 0.25
    noise_k: float = 3.0
    psnr_tol: float = 0.1
    lpips_tol: float = 0.005
    strict: bool = False
    calibrate: bool = True


def compare(new: dict[str, Any], baseline: dict[str, Any], limits: Limits | None = None, **kw: Any) -> list[Finding]:
    """Compare two pytest-benchmark results; see the module docstring for the rules.

    ``limits`` (or its fields as keywords, e.g. ``time_rel=0.5``) set the thresholds."""
    lim = limits or Limits(**kw)
    new_b, base_b = _by_name(new), _by_name(baseline)
    measured, note = machine_factor(new_b, base_b) if lim.calibrate else (None, "off: absolute times compared")
    findings = [Finding(CALIBRATION, "machine", 1.0, measured, False, note)]
    factor = measured or 1.0
    for name, base in sorted(base_b.items()):
        if name.startswith(CALIBRATION):
            continue
        if name not in new_b:
            findings.append(Finding(name, "missing", None, None, lim.strict, "in the baseline, not in the new run"))
            continue
        findings.append(_time_finding(name, base, new_b[name], lim, factor))
        findings += _quality_findings(name, base.get("extra_info", {}), new_b[name].get("extra_info", {}), lim)
    findings += [Finding(name, "new", None, None, False, "not in the baseline: nothing to compare it with")
                 for name in sorted(set(new_b) - set(base_b)) if not name.startswith(CALIBRATION)]
    return findings


def machine_factor(new_b: dict[str, dict[str, Any]], base_b: dict[str, dict[str, Any]]) -> tuple[float | None, str]:
    """How much slower the new run's machine was than the baseline's on the calibration workload:
    the sum of the new calibration minima over the sum of the baseline's, over the positions
    (``[start]``, ``[end]``) both runs hold, and a sentence saying so; ``(None, why)`` when they
    share none."""
    shared = sorted(n for n in set(new_b) & set(base_b) if n.startswith(CALIBRATION))
    if not shared:
        which = [side for side, b in (("the new run", new_b), ("the baseline", base_b))
                 if not any(n.startswith(CALIBRATION) for n in b)]
        where = f"no calibration benchmark in {' or '.join(which)}" if which else "no calibration position in both runs"
        return None, f"{where}: absolute times compared"
    n_sum = sum(new_b[n]["stats"]["min"] for n in shared)
    b_sum = sum(base_b[n]["stats"]["min"] for n in shared)
    factor = n_sum / b_sum
    return factor, (f"new run's machine ×{factor:.2f} the baseline's on {', '.join(shared)} "
                    f"({n_sum * 1e3:.2f} ms vs {b_sum * 1e3:.2f} ms); new times are divided by it")


def _time_finding(name: str, base: dict[str, Any], cur: dict[str, Any], lim: Limits, factor: float = 1.0) -> Finding:
    b_min, raw = base["stats"]["min"], cur["stats"]["min"]
    n_min = raw / factor
    spread = max(base["stats"].get("iqr") or 0.0, base["stats"].get("stddev") or 0.0)
    regression = n_min > b_min * (1 + lim.time_rel) and n_min - b_min > lim.noise_k * spread
    scaled = "" if factor == 1.0 else f" (measured {raw * 1e3:.1f} ms ÷ machine ×{factor:.2f})"
    return Finding(name, "time", b_min, n_min, regression,
                   f"min {n_min * 1e3:.1f} ms{scaled} vs {b_min * 1e3:.1f} ms ({(n_min / b_min - 1) * 100:+.0f} %, "
                   f"limit +{lim.time_rel * 100:.0f} % and > {lim.noise_k:g}×spread {spread * 1e3:.1f} ms)")


def _quality_findings(name: str, b_info: dict[str, Any], n_info: dict[str, Any], lim: Limits) -> list[Finding]:
    out = []
    if "psnr" in b_info and "psnr" in n_info:
        d = n_info["psnr"] - b_info["psnr"]
        out.append(Finding(name, "psnr", b_info["psnr"], n_info["psnr"], d < -lim.psnr_tol,
                           f"{n_info['psnr']:.3f} dB vs {b_info['psnr']:.3f} dB ({d:+.3f}, tolerance {lim.psnr_tol})"))
    if "lpips" in b_info and "lpips" in n_info:
        d = n_info["lpips"] - b_info["lpips"]
        out.append(Finding(name, "lpips", b_info["lpips"], n_info["lpips"], d > lim.lpips_tol,
                           f"{n_info['lpips']:.4f} vs {b_info['lpips']:.4f} ({d:+.4f}, tolerance {lim.lpips_tol})"))
    return out
