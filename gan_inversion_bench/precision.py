"""Numeric precision and compilation settings for ``method.invert``, applied from outside the method.

:func:`execution_context` wraps any method's ``invert`` call (the harness does this for every
batch); methods need no precision-specific code beyond two rules (``docs/performance.md``):

* the loss is computed in fp32: generator outputs are cast with ``.float()`` before the loss,
  and the loss object (which caches the target features) is built under :func:`full_precision`,
  so that the cached targets are fp32 and every reduction promotes to fp32;
* :func:`gan_inversion_bench.method_tools.optimise` casts the per-image losses to fp32 and, under a
  compile setting other than ``"off"``, compiles the per-iteration closure with ``torch.compile``.

Precisions:

``fp32``
    IEEE fp32 everywhere; TF32 tensor-core math is explicitly *disabled* for matmuls and cuDNN
    convolutions (PyTorch enables it for cuDNN by default), so this is the reference.
``tf32``
    fp32 tensors, TF32 tensor-core math for matmuls and convolutions on CUDA (Ampere and newer).
    On the CPU it has no effect: :func:`effective_precision` then reports ``fp32``.
``bf16``
    ``torch.autocast(device_type, dtype=torch.bfloat16)``: convolutions and matmuls in bf16,
    parameters, optimiser state and the loss in fp32. Allowed on the CPU, where it is usually
    *slower* than fp32 unless the CPU has native bf16 instructions (see :func:`precision_note`).

The previous TF32 switches (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``) are restored when the context exits, also on errors.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("fp32", "tf32", "bf16")
#: torch.compile modes; "reduce-overhead" captures CUDA graphs (CUDA only), "off" runs eagerly
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")

_compile_mode: contextvars.ContextVar[str] = contextvars.ContextVar("gib_compile_mode", default="off")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def _device_type(device: Any) -> str:
    return torch.device(device).type


def effective_precision(precision: str, device: Any) -> str:
    """What a precision setting really does on ``device`` (``tf32`` is ``fp32`` off CUDA)."""
    check_precision(precision)
    if precision == "tf32" and _device_type(device) != "cuda":
        return "fp32"
    return precision


def precision_note(precision: str, device: Any) -> str | None:
    """A one-line caveat to show the user, or None."""
    kind = _device_type(device)
    if precision == "tf32" and kind != "cuda":
        return f"tf32 has no effect on {kind}: TF32 is a CUDA tensor-core format; running fp32"
    if precision == "bf16" and kind == "cpu":
        return ("bf16 autocast on the CPU is allowed but usually slower than fp32 (it only pays off with native "
                "bf16 instructions such as AVX512-BF16/AMX); quality is checked against fp32 the same way")
    return None


@contextlib.contextmanager
def tf32_enabled(enabled: bool) -> Iterator[None]:
    """Set the TF32 switches for matmuls and cuDNN convolutions; restore the previous values."""
    old_matmul = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_matmul
        torch.backends.cudnn.allow_tf32 = old_cudnn


@contextlib.contextmanager
def precision_context(precision: str, device: Any) -> Iterator[None]:
    """Run the enclosed code (typically ``method.invert``) at ``precision`` on ``device``."""
    check_precision(precision)
    kind = _device_type(device)
    with tf32_enabled(precision == "tf32"):
        if precision == "bf16":
            with torch.autocast(kind, dtype=torch.bfloat16):
                yield
        else:
            yield


@contextlib.contextmanager
def full_precision(device: Any) -> Iterator[None]:
    """Autocast off inside (e.g. to build a loss whose cached target features must be fp32)."""
    with torch.autocast(_device_type(device), enabled=False):
        yield


@contextlib.contextmanager
def compile_mode(mode: str) -> Iterator[None]:
    """Make :func:`maybe_compile` (used by ``method_tools.optimise`` and the generators' stages)
    compile with ``mode`` inside."""
    token = _compile_mode.set(check_compile_mode(mode))
    try:
        yield
    finally:
        _compile_mode.reset(token)


def current_compile_mode() -> str:
    return _compile_mode.get()


def maybe_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled with the current compile mode, or ``fn`` itself when the mode is ``"off"``."""
    mode = _compile_mode.get()
    if mode == "off":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode)


def mark_step() -> None:
    """Under ``reduce-overhead`` (CUDA graphs), tell the graph trees that a new iteration begins,
    so the previous iteration's graph outputs may be overwritten."""
    if _compile_mode.get() == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


@dataclass(frozen=True)
class ExecutionOptions:
    """How a method's ``invert`` is executed: numeric precision, compilation, memory format."""

    precision: str = "fp32"
    compile: str = "off"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_compile_mode(self.compile)
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last must be true or false, got {self.channels_last!r}")

    def is_default(self) -> bool:
        return self == ExecutionOptions()

    def non_defaults(self) -> dict[str, Any]:
        """The settings that differ from the defaults (they enter a result's method key)."""
        d = ExecutionOptions()
        return {k: getattr(self, k) for k in ("precision", "compile", "channels_last")
                if getattr(self, k) != getattr(d, k)}

    def describe(self) -> str:
        parts = [self.precision]
        if self.compile != "off":
            parts.append(f"torch.compile {self.compile}")
        if self.channels_last:
            parts.append("channels-last")
        return ", ".join(parts)


@contextlib.contextmanager
def execution_context(options: ExecutionOptions, device: Any) -> Iterator[None]:
    """Precision and compile mode for everything inside; wrap ``method.invert`` with it."""
    with precision_context(options.precision, device), compile_mode(options.compile):
        yield


__all__ = ["PRECISIONS", "COMPILE_MODES", "ExecutionOptions", "execution_context", "precision_context",
           "full_precision", "compile_mode", "current_compile_mode", "maybe_compile", "mark_step", "tf32_enabled",
           "effective_precision", "precision_note", "check_precision", "check_compile_mode"]
