"""What every conformance check shares: the budget, the device, the tiny generators, small helpers."""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import torch
from torch import Tensor

from ..devices import resolve_device
from ..generator import SplitGenerator
from ..method import InversionMethod
from ..registry import GENERATORS, METHODS

#: budget (iterations) of every inversion in the method checks
BUDGET = 8
#: environment variable naming the device the checks run on (default: the CPU)
DEVICE_ENV = "GIB_TEST_DEVICE"


# ---- small helpers -------------------------------------------------------------------------------
def scratch_folder(prefix: str) -> str:
    """A new temporary folder (``tempfile.mkdtemp``) that is removed when this process exits, for caches the
    checks share within one process (each pytest-xdist worker has its own)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def _raises(kinds: type[BaseException] | tuple[type[BaseException], ...], match: str, what: str) -> Iterator[None]:
    """Like ``pytest.raises`` (without pytest): the block must raise ``kinds`` with ``match`` in the message."""
    try:
        yield
    except kinds as e:
        if not re.search(match, str(e)):
            raise AssertionError(f"{what}: raised {type(e).__name__} but the message {str(e)!r} does not match "
                                 f"{match!r}") from e
        return
    raise AssertionError(f"{what}: expected {kinds} matching {match!r}, nothing was raised")


def _method_class(method: str | type[InversionMethod] | InversionMethod) -> type[InversionMethod]:
    if isinstance(method, str):
        cls: type[InversionMethod] = METHODS.get(method)
        return cls
    return method if isinstance(method, type) else type(method)


def suite_device() -> torch.device:
    """The device the checks run on: ``$GIB_TEST_DEVICE`` (cpu, cuda, cuda:N, auto), else the CPU.
    A device this machine does not have is refused with a message naming the variable."""
    name = os.environ.get(DEVICE_ENV, "").strip() or "cpu"
    try:
        return resolve_device(name)
    except ValueError as e:
        raise RuntimeError(f"{DEVICE_ENV}={name!r}: {e}; unset {DEVICE_ENV} to run the checks on the CPU") from None


def tiny_generator(name: str) -> SplitGenerator:
    """``GENERATORS.create(name, tiny=True)`` in eval mode on :func:`suite_device`, built once per
    process and device."""
    return _tiny_generator(name, str(suite_device()))


@functools.cache
def _tiny_generator(name: str, device: str) -> SplitGenerator:
    torch.manual_seed(0)
    generator: SplitGenerator = GENERATORS.create(name, tiny=True)
    return generator.to(device).eval()


def generator_families() -> list[str]:
    """Every registered generator name (built-in and entry points)."""
    return GENERATORS.names()


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
