"""The benchmark harness: one generator × methods × one image set × settings → a run folder.

A run folder holds ``results.sqlite`` (every finished (method, image) result, see
:mod:`~gan_inversion_bench.store`), ``targets/`` and ``recon/<method_key>/`` PNGs, and a
``.lock`` file. Running the same configuration again resumes: finished pairs are skipped.

Faults (see ``docs/reliability.md``): a PNG is written to a temporary name, fsynced and renamed
before its row is committed, so a killed run never leaves a row without its image; temporary
files and ``running`` sessions left by a killed run are cleaned up when the next run takes the
lock. A failed write (full disk, read-only folder) stops the run with a :class:`RunError` that
says how to resume. When ``method.invert`` runs out of memory the batch is halved and retried,
down to one image; the batch size used is stored with every row.

Timing: on CUDA the inversion of a batch is timed with CUDA events around synchronised work;
on CPU with ``time.perf_counter``. The per-image time is the batch time divided by the batch
size (the table says which timer was used). Before its first timed batch each method runs one
untimed one-iteration warm-up, so no method pays for one-off set-up. Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA and the process's peak resident set size on CPU.

Speed (``docs/performance.md``): images are inverted in batches. The automatic batch size is,
on CUDA, estimated from a probe (one iteration at 1 and at up to 4 images; the growth of
``max_memory_allocated`` per image is scaled to 80 % of the free memory) and, on the CPU, up to
16 images. Methods whose ``execution`` setting is ``"reference"`` (the seeds' per-image pattern)
always run one image per batch, in fp32, uncompiled. ``RunConfig.precision`` (fp32, tf32,
bf16), ``compile`` (torch.compile mode) and ``channels_last`` are applied around every
``method.invert`` by :func:`gan_inversion_bench.precision.execution_context`, recorded with every
row, and enter the method key when they differ from the defaults. The warm-up also counts the
FLOPs of one iteration (:func:`gan_inversion_bench.perf.record_iteration_flops`), from which each
row gets its achieved TFLOP/s and fraction of the device's peak.

Several processes (``torchrun``): see :mod:`gan_inversion_bench.distributed`; rank 0 alone holds
the lock and the database, the other ranks invert their share and send their records to it.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from . import __version__
from . import distributed
from .distributed import DistInfo
from .imagesets import ImageItem, ImageSet, load_image_set
from .method import InversionFailed, InversionMethod
from .metrics import CONVENTIONS, compute_metrics
from .perf import achieved, record_iteration_flops
from .precision import ExecutionOptions, effective_precision, execution_context, precision_note
from .registry import GENERATORS, METHODS
from .store import ResultStore, method_key, now

Echo = Callable[[str], None]


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


@dataclass
class RunConfig:
    """Everything that defines a run. Fields in ``IDENTITY`` must match when resuming."""

    generator: str = "dcgan-digiface64"
    generator_options: dict[str, Any] = field(default_factory=dict)
    methods: list[str] | None = None           # None: every registered method
    profile: str = "quick"                      # "quick" (short budget) or "paper" (the seeds' defaults)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method (or "*") → settings
    images: str = "generated+photos"
    n_generated: int = 8
    seed: int = 0
    batch_size: int | None = None               # None: automatic
    device: str = "auto"
    precision: str = "fp32"                     # "fp32", "tf32" (CUDA) or "bf16" (autocast)
    compile: str = "off"                        # torch.compile mode: off, default, reduce-overhead, max-autotune
    channels_last: bool = False                 # generator weights in channels-last memory format

    IDENTITY = ("generator", "generator_options", "images", "n_generated", "seed")

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.IDENTITY}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise RunError(f"invalid device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads)"


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "gan_inversion_bench": __version__}
    for dist in ("torch", "torchvision", "numpy", "lpips", "scikit-learn", "pillow"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def code_revision() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"release {__version__}"


def image_seed(run_seed: int, image_id: str) -> int:
    """A per-image seed that depends only on the run seed and the image id."""
    return zlib.crc32(f"{run_seed}:{image_id}".encode()) & 0x7FFFFFFF


# ---- test-only fault injection -----------------------------------------------------------------
#: TEST-ONLY hook. ``GIB_TEST_KILL_AT=<event>:<n>`` makes the process send itself a signal
#: (``GIB_TEST_KILL_SIGNAL``, default ``KILL``; ``STOP`` freezes it so that a test can act) the n-th
#: time it passes ``<event>``, one of :data:`FAULT_EVENTS`. tests/test_reliability.py uses it for
#: reproducible SIGKILLs; it costs one dictionary look-up when unset. Never set it otherwise.
KILL_ENV = "GIB_TEST_KILL_AT"
FAULT_EVENTS = ("session_start", "png_tmp", "png_renamed", "batch_start", "inverted", "db_commit", "committed")
_fault_counts: dict[str, int] = {}


def fault_point(event: str) -> None:
    """Named point where the test-only hook may signal this process (see :data:`KILL_ENV`)."""
    spec = os.environ.get(KILL_ENV)
    if not spec or spec.rpartition(":")[0] != event:
        return
    _fault_counts[event] = _fault_counts.get(event, 0) + 1
    if str(_fault_counts[event]) == spec.rpartition(":")[2].strip():
        name = os.environ.get("GIB_TEST_KILL_SIGNAL", "KILL").upper()
        os.kill(os.getpid(), getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))


def _trace_commits(store: ResultStore) -> None:
    """With the hook set to ``db_commit``, fire it inside each transaction, just before COMMIT."""
    if os.environ.get(KILL_ENV, "").startswith("db_commit:"):
        store.conn.set_trace_callback(lambda sql: fault_point("db_commit") if sql.strip() == "COMMIT" else None)


# ---- files ------------------------------------------------------------------------------------------
def save_png(image: torch.Tensor, path: Path) -> None:
    """``[3, H, W]`` in [-1, 1] → 8-bit PNG, written to a temporary name, fsynced and renamed into place."""
    a = ((image.detach().float().clamp(-1, 1).cpu() + 1) * 127.5).round().to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            Image.fromarray(a.permute(1, 2, 0).numpy()).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        fault_point("png_tmp")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)  # the rename is durable before the row that points to it is committed
    fault_point("png_renamed")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable(run_dir: Path) -> None:
    """Create the run folder if needed and prove that a file can be written into it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"output folder {run_dir} is not writable: {e}") from None


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed run left behind (call only while holding the run lock)."""
    stale = [p for sub in ("targets", "recon") for p in (run_dir / sub).glob("**/*.tmp") if p.is_file()]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


@contextlib.contextmanager
def writing_into(run_dir: Path) -> Iterator[None]:
    """A failed write (full disk, read-only folder, ...) becomes a :class:`RunError` saying how to resume."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as e:
        raise RunError(f"cannot write into the run folder {run_dir}: {type(e).__name__}: {e}. The results "
                       f"finished before this are kept in {run_dir / ResultStore.FILENAME}; free some disk space "
                       f"(or make the folder writable) and run the same command again to resume.") from None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on a run folder; a second process refuses with a clear message."""
    import fcntl

    lock_path = run_dir / ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunError(f"run folder {run_dir} is in use by {holder}; wait for it to finish "
                           f"or use another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


class Timer:
    """CUDA events on CUDA (synchronised), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda-events" if device.type == "cuda" else "cpu-wall-clock"

    def __enter__(self) -> "Timer":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self._end.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.mem_kind = "cuda-max-allocated"
        else:
            self.seconds = time.perf_counter() - self._t0
            import resource

            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
            self.mem_kind = "cpu-process-peak-rss"


def build_method(name: str, config: RunConfig) -> InversionMethod:
    cls = METHODS.get(name)
    overrides = {**config.overrides.get("*", {}), **config.overrides.get(name, {})}
    fields = {f.name for f in dataclasses.fields(cls.Settings)}
    if "*" in config.overrides:  # global overrides apply only where the method has the setting
        overrides = {k: v for k, v in overrides.items() if k in fields or k in config.overrides.get(name, {})}
    return cls.from_profile(config.profile, **overrides)


def auto_batch_size(n: int, device: torch.device) -> int:
    """The rule without a probe: up to 16 images on the CPU, 64 elsewhere."""
    return max(1, min(n, 16 if device.type == "cpu" else 64))


#: share of the free device memory the automatic batch size may plan to use
MEMORY_FRACTION = 0.8


def batch_from_probe(peak_1: float, peak_k: float, k: int, available: float, n: int,
                     fraction: float = MEMORY_FRACTION) -> int:
    """Batch size from a memory probe: peak memory (above what was allocated before) of one
    iteration at 1 and at ``k`` images, ``available`` bytes; at most ``n`` images, at least 1."""
    per_image = max((peak_k - peak_1) / (k - 1), 1.0) if k > 1 else max(peak_1, 1.0)
    fixed = max(peak_1 - per_image, 0.0)
    return max(1, min(n, int((fraction * available - fixed) // per_image)))


def execution_options(config: RunConfig, device: torch.device) -> ExecutionOptions:
    """The run's precision/compile/memory-format settings as they take effect on ``device``."""
    try:
        return ExecutionOptions(precision=effective_precision(config.precision, device), compile=config.compile,
                                channels_last=config.channels_last)
    except ValueError as e:
        raise RunError(str(e)) from None


def run_method_key(method: InversionMethod, config: RunConfig, options: ExecutionOptions) -> str:
    """The key under which a method's results are stored. The default execution settings
    (``execution="batched"``, fp32, no compile) are left out, so keys made before those settings
    existed stay valid and old run folders resume without recomputation."""
    settings = method.get_settings()
    if settings.get("execution") == "batched":
        settings = {k: v for k, v in settings.items() if k != "execution"}
    return method_key(method.name, method.version, settings,
                      {"prepared": method.prepared_state(), "profile": config.profile, **options.non_defaults()})


def is_reference(method: InversionMethod) -> bool:
    return getattr(method.settings, "execution", "batched") == "reference"


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA (or other allocator) out-of-memory error raised by a method."""
    if isinstance(error, (RunError, InversionFailed)):
        return False
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _smaller_batch(error: BaseException, size: int, method: str, device: torch.device, echo: Echo) -> int:
    """Half of ``size`` after an out-of-memory error; a :class:`RunError` if ``size`` was already 1."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if size <= 1:
        raise RunError(f"{method}: out of memory even with a batch of one image ({first_line}). Finished "
                       f"results are kept; free memory on {device} (or use a smaller generator or --device cpu) "
                       f"and run the same command again to resume.")
    if device.type == "cuda":
        traceback.clear_frames(error.__traceback__)  # the failed attempt's tensors are held by its frames
        torch.cuda.empty_cache()
    echo(f"{method}: out of memory with a batch of {size} images; retrying with {size // 2} ({first_line})")
    return size // 2


def history_summary(history: torch.Tensor, column: int, points: int = 200) -> dict[str, list[float]]:
    t = history.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(points, t)).round().astype(int))
    vals = history[idx, column].tolist()
    return {"iteration": idx.tolist(), "loss": [None if v != v else float(v) for v in vals]}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def run(config: RunConfig, out: str | Path, *, echo: Echo = print, progress: bool = True,
        argv: list[str] | None = None) -> Path:
    """Run (or resume) a benchmark into the folder ``out``; returns the folder.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; the images are shared out
    over the processes and rank 0 stores every record (:mod:`gan_inversion_bench.distributed`).
    """
    run_dir = Path(out).expanduser()
    try:
        ctx = distributed.from_env()
    except ValueError as e:
        raise RunError(str(e)) from None
    if not ctx.enabled:
        return _run_main(config, run_dir, resolve_device(config.device), echo, progress, argv, ctx)
    try:
        device = distributed.device_for(ctx, config.device)
    except ValueError as e:
        raise RunError(str(e)) from None
    distributed.init(ctx, device)
    try:
        if ctx.is_main:
            return _run_main(config, run_dir, device, echo, progress, argv, ctx)
        refused = ctx.broadcast(None)  # rank 0 says whether the run started
        if refused:
            raise RunError(refused)
        method_names = _validate(config)
        _run_inner(config, run_dir, None, 0, device, method_names, lambda s: None, False, ctx)
        return run_dir
    finally:
        distributed.shutdown(ctx)


def _validate(config: RunConfig) -> list[str]:
    """The method names; unknown names and invalid settings of any method fail before any work."""
    method_names = config.methods if config.methods else METHODS.names()
    for name in method_names:
        build_method(name, config)
    if config.batch_size is not None and config.batch_size < 1:
        raise RunError(f"batch size must be >= 1, got {config.batch_size}")
    execution_options(config, torch.device("cpu"))
    return method_names


def _run_main(config: RunConfig, run_dir: Path, device: torch.device, echo: Echo, progress: bool,
              argv: list[str] | None, ctx: DistInfo) -> Path:
    """The single process, or rank 0: lock, database, session, then the work."""
    started = False
    try:
        check_writable(run_dir)
        method_names = _validate(config)
        with run_lock(run_dir), ResultStore(run_dir) as store:
            _check_identity(config, run_dir, store, echo)
            _fault_counts.clear()
            _clean_up_after_killed_runs(run_dir, store, echo)
            with writing_into(run_dir):
                store.set_meta("identity", config.identity())
                session = store.start_session(argv or sys.argv, socket.gethostname(), os.getpid())
            fault_point("session_start")
            _trace_commits(store)
            ctx.broadcast(None)  # the other ranks may start
            started = True
            status = "failed"
            try:
                _run_inner(config, run_dir, store, session, device, method_names, echo, progress, ctx)
                status = "finished"
            except KeyboardInterrupt:
                status = "interrupted"
                echo(f"\nInterrupted. Finished results are kept in {run_dir / ResultStore.FILENAME}; "
                     f"run the same command again to resume.")
                raise
            finally:
                with contextlib.suppress(sqlite3.Error):  # e.g. a full disk: keep the original error
                    store.finish_session(session, status)
    except Exception as e:
        if ctx.enabled and not started:
            ctx.broadcast(f"rank 0 could not start the run: {e}")
        raise
    return run_dir


def _check_identity(config: RunConfig, run_dir: Path, store: ResultStore, echo: Echo) -> None:
    """Resuming needs the same identity; a folder without any result (e.g. a run that failed on a bad
    checkpoint path) starts again with the new one, dropping the targets it saved."""
    stored = store.get_meta("identity")
    if stored is None or stored == json.loads(json.dumps(config.identity(), sort_keys=True, default=str)):
        return
    if store.conn.execute("SELECT 1 FROM results LIMIT 1").fetchone() is None:
        for sub in ("targets", "recon"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
        echo(f"run folder {run_dir} holds no results yet; starting it with the new configuration")
        return
    raise RunError(f"run folder {run_dir} was made with a different configuration:\n  stored: {stored}\n"
                   f"  now:    {config.identity()}\nuse another --out folder for a new configuration")


def _clean_up_after_killed_runs(run_dir: Path, store: ResultStore, echo: Echo) -> None:
    """Under the lock nobody else is writing: stale temp files go, ``running`` sessions were killed."""
    stale = remove_stale_temp_files(run_dir)
    if stale:
        echo(f"removed {len(stale)} temporary file(s) left by an earlier run that was killed")
    with writing_into(run_dir):
        store.conn.execute("UPDATE sessions SET status = 'abandoned' WHERE status = 'running'")


def _run_inner(config: RunConfig, run_dir: Path, store: ResultStore | None, session: int, device: torch.device,
               method_names: list[str], echo: Echo, progress: bool, ctx: DistInfo) -> None:
    generator = GENERATORS.create(config.generator, **config.generator_options).to(device).eval()
    if not generator.name:
        generator.name = config.generator
    options = execution_options(config, device)
    if options.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    note = precision_note(config.precision, device)
    if note:
        echo(f"note: {note}")
    images = load_image_set(config.images, generator, n=config.n_generated, seed=config.seed)
    for f, reason in images.skipped:
        echo(f"skipped {f}: {reason}")
    if ctx.is_main:
        with writing_into(run_dir):
            _save_targets(images, run_dir)
            store.set_meta("image_set", images.describe())
            store.set_meta("generator", generator.describe())
    common = {"generator": generator.describe(), "device": device_name(device), "versions": library_versions(),
              "code_revision": code_revision(), "metric_conventions": CONVENTIONS, "image_set": images.spec,
              "session": session, "run_dir": run_dir}
    for name in method_names:
        _run_method(name, config, generator, images, store, device, options, common, echo, progress, ctx)


def _prepared_method(name: str, config: RunConfig, generator: Any, run_dir: Path, device: torch.device,
                     ctx: DistInfo) -> InversionMethod:
    """Build and prepare a method; with several ranks, rank 0 prepares and sends it to the others."""
    method = build_method(name, config)
    if ctx.is_main:
        method.prepare(generator, seed=config.seed, cache_dir=run_dir / "cache")
    if not ctx.enabled:
        return method
    shipped = ctx.broadcast(_with_tensors_on(method, torch.device("cpu")) if ctx.is_main else None)
    return method if ctx.is_main else _with_tensors_on(shipped, device)


def _with_tensors_on(method: InversionMethod, device: torch.device) -> InversionMethod:
    """A shallow copy whose tensor attributes (learned state such as PmSFC's masks) are on ``device``."""
    out = copy.copy(method)
    for k, v in vars(method).items():
        if isinstance(v, torch.Tensor):
            setattr(out, k, v.to(device))
    return out


def _run_method(name: str, config: RunConfig, generator: Any, images: ImageSet, store: ResultStore | None,
                device: torch.device, options: ExecutionOptions, common: dict[str, Any], echo: Echo, progress: bool,
                ctx: DistInfo) -> None:
    """Invert every pending image with one method, batch by batch, halving the batch on out-of-memory.

    Work proceeds in rounds: each rank inverts its next batch, rank 0 stores what every rank
    finished (in one process: its own batch), then all ranks learn whether to go on.
    """
    method = _prepared_method(name, config, generator, common["run_dir"], device, ctx)
    reference = is_reference(method)
    if reference and not options.is_default():
        echo(f"{name}: reference execution runs in fp32, uncompiled (the seeds' pattern); ignoring "
             f"{options.describe()}")
        options = ExecutionOptions()
    key = run_method_key(method, config, options)
    key, done = ctx.broadcast((key, sorted(store.done_images(key))) if ctx.is_main else None)
    done = set(done)
    pending = [it for it in images.items if it.id not in done]
    mine = ctx.shard(pending)
    how = "" if options.is_default() else f", {options.describe()}"
    how += ", reference execution" if reference else ""
    how += f", {ctx.world_size} processes" if ctx.enabled else ""
    echo(f"{name}: {len(images.items) - len(pending)} done, {len(pending)} to invert "
         f"({config.profile} profile, device {common['device']}{how})")
    requested = bs = 1 if reference else (config.batch_size or 0)
    if reference and config.batch_size not in (None, 1):
        echo(f"{name}: reference execution inverts one image at a time (batch size 1)")
    flops = None
    if mine:
        flops = _warm_up(method, generator, mine[:1], device, options, count_flops=True)
        if not bs:
            requested = bs = _automatic_batch_size(method, generator, mine, device, options, echo, name)
        if options.compile != "off" or (device.type == "cuda" and bs > 1):
            # compile, and on CUDA select kernels and grow the allocator, for the timed batch shape
            _warm_up(method, generator, mine[:bs], device, options, iterations=2 if options.compile != "off" else 1)
    while True:
        batch = mine[:bs]
        payload: dict[str, Any] = {"rows": [], "error": None, "done": not batch}
        if batch:
            fault_point("batch_start")
            note = f"batch size reduced from {requested} to {bs} after running out of memory" if bs < requested else ""
            try:
                payload["rows"] = _invert_batch(method, key, generator, batch, config, device, options, flops, common,
                                                progress, note)
                mine = mine[len(batch):]
            except RuntimeError as e:
                try:
                    if not is_out_of_memory(e):
                        raise
                    bs = _smaller_batch(e, len(batch), method.name, device, echo)
                except Exception as e2:
                    if not ctx.enabled:
                        raise
                    payload["error"] = f"{type(e2).__name__}: {e2}"
        gathered = ctx.gather(payload)  # every rank takes part; rank 0 receives
        verdict = ctx.broadcast(_store_round(gathered, store, common, ctx) if ctx.is_main else None)
        if verdict["error"]:
            raise RunError(verdict["error"])
        if verdict["stop"]:
            return


def _store_round(payloads: list[dict[str, Any]], store: ResultStore, common: dict[str, Any],
                 ctx: DistInfo) -> dict[str, Any]:
    """Rank 0: write the PNGs and rows every rank finished in this round; say whether to go on."""
    errors = [f"rank {r}: {p['error']}" for r, p in enumerate(payloads) if p["error"]]
    try:
        for p in payloads:
            if p["rows"]:
                for row in p["rows"]:
                    row["session"] = common["session"]  # rank 0's session (the other ranks have none)
                _store_rows(p["rows"], store, common["run_dir"])
    except Exception as e:
        if not ctx.enabled:
            raise
        errors.append(f"rank 0: {e}")
    if errors and ctx.enabled:
        errors.append("finished results are kept; run the same command again to resume")
    return {"error": "; ".join(errors) or None, "stop": all(p["done"] for p in payloads)}


def _store_rows(rows: list[dict[str, Any]], store: ResultStore, run_dir: Path) -> None:
    """Write each ok row's reconstruction PNG, then commit the rows in one transaction."""
    for row in rows:
        image = row.pop("_png", None)
        if image is not None:
            with writing_into(run_dir):
                save_png(image, run_dir / row["recon_path"])
    with writing_into(run_dir):
        store.add_results(rows)
    fault_point("committed")


def _with_iterations(method: InversionMethod, iterations: int) -> InversionMethod:
    m = copy.copy(method)
    m.settings = dataclasses.replace(method.settings, iterations=iterations)
    return m


def _warm_up(method: InversionMethod, generator: Any, items: list[ImageItem], device: torch.device,
             options: ExecutionOptions, *, iterations: int = 1, count_flops: bool = False) -> float | None:
    """An untimed short inversion (one iteration of one image by default), so that the first timed
    batch does not pay for loading the perceptual network, allocator growth, one-off kernel
    selection or compilation. With ``count_flops`` it returns the FLOPs of one iteration per image
    (counted in the optimisation loop; None for a method with its own loop)."""
    warm = _with_iterations(method, iterations)
    targets = torch.stack([it.image for it in items]).to(device)
    with record_iteration_flops() if count_flops else contextlib.nullcontext([]) as flops:
        try:
            with execution_context(options, device):
                warm.invert(generator, targets, seeds=0)
        except RuntimeError as e:  # out of memory even for one image, every loss non-finite: the timed loop reports it
            if not (is_out_of_memory(e) or isinstance(e, InversionFailed)):
                raise
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return flops[0] if flops else None


def _automatic_batch_size(method: InversionMethod, generator: Any, items: list[ImageItem], device: torch.device,
                          options: ExecutionOptions, echo: Echo, name: str) -> int:
    """The CPU rule, or on CUDA the memory probe (:func:`batch_from_probe`)."""
    n = len(items)
    if device.type != "cuda" or n == 1:
        return auto_batch_size(n, device)
    k = min(4, n)
    peaks = []
    for size in (1, k):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            _warm_up(method, generator, items[:size], device, options)
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            return max(1, size // 2)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    bs = batch_from_probe(peaks[0], peaks[1], k, available, n)
    echo(f"{name}: automatic batch size {bs} (probe: {peaks[0] / 2**20:.0f} MiB at 1 image, {peaks[1] / 2**20:.0f} MiB "
         f"at {k}; {available / 2**30:.1f} GiB available, planning {MEMORY_FRACTION:.0%})")
    return bs


def _save_targets(images: ImageSet, run_dir: Path) -> None:
    for it in images.items:
        path = run_dir / "targets" / f"{it.id}.png"
        if not path.exists():
            save_png(it.image, path)
    latents = {it.id: it.latent for it in images.items if it.latent is not None}
    path = run_dir / "targets" / "generated_latents.pt"
    if latents and not path.exists():
        tmp = path.with_suffix(".pt.tmp")
        torch.save(latents, tmp)
        os.replace(tmp, path)


def _invert_batch(method: InversionMethod, key: str, generator: Any, batch: list[ImageItem], config: RunConfig,
                  device: torch.device, options: ExecutionOptions, flops: float | None, common: dict[str, Any],
                  progress: bool, note: str = "") -> list[dict[str, Any]]:
    """Invert one batch; the rows carry their reconstruction (``_png``) until :func:`_store_rows`."""
    targets = torch.stack([it.image for it in batch]).to(device)
    seeds = [image_seed(config.seed, it.id) for it in batch]
    bar = _progress_bar(f"{method.name} [{batch[0].id} … {batch[-1].id}]", progress)
    try:
        with Timer(device) as timer, execution_context(options, device):
            result = method.invert(generator, targets, seeds=seeds, progress=bar.update if bar else None)
    except InversionFailed as e:
        result, failure = None, f"every image of the batch failed: {e}"
    else:
        failure = None
    finally:
        if bar:
            bar.close()
    fault_point("inverted")
    metrics = compute_metrics(result.reconstructions.float().clamp(-1, 1), targets) if result is not None else {}
    iterations = getattr(method.settings, "iterations", None) or (result.iterations if result is not None else 0)
    tflops, fraction = achieved(flops, iterations, len(batch), timer.seconds, common["device"], options.precision)
    how = "" if options.is_default() else f", {options.describe()}"
    timing = {"time_s": timer.seconds / len(batch), "peak_mem_mb": timer.peak_mb, "mem_kind": timer.mem_kind,
              "timer": f"{timer.kind}, batch of {len(batch)}{how}" + (f" ({note})" if note else ""),
              "precision": options.precision, "flops_per_iteration": flops, "tflops": tflops,
              "peak_fraction": fraction}
    return [_result_row(method, key, it, i, seeds[i], len(batch), result, failure, metrics, timing, common)
            for i, it in enumerate(batch)]


def _result_row(method: InversionMethod, key: str, item: ImageItem, i: int, seed: int, batch_size: int,
                result: Any, failure: str | None, metrics: dict[str, torch.Tensor], timing: dict[str, Any],
                common: dict[str, Any]) -> dict[str, Any]:
    """The self-describing row of image ``i`` of a batch; an ok row carries its reconstruction
    (CPU tensor, ``_png``) for :func:`_store_rows` to write before the row is committed."""
    row: dict[str, Any] = {
        "method_key": key, "image_id": item.id, "method": method.name, "method_version": method.version,
        "image_set": common["image_set"], "iterations": getattr(method.settings, "iterations", None),
        "seed": seed, "batch_size": batch_size, "device": common["device"],
        "generator": common["generator"], "split": getattr(method.settings, "split", None),
        "method_settings": method.get_settings(), "prepared": method.prepared_state(),
        "metric_conventions": common["metric_conventions"], "versions": common["versions"],
        "code_revision": common["code_revision"], "session": common["session"], "created": now(), **timing,
    }
    reason = failure or (result.failures.get(i) if result is not None else None)
    if result is not None and reason is None:
        row.update(status="ok", recon_path=str(Path("recon") / key / f"{item.id}.png"),
                   _png=result.reconstructions[i].detach().float().cpu(),
                   loss_history=history_summary(result.loss_history, i),
                   final_loss=_finite(result.loss_history[-1, i].item()),
                   **{m: _finite(v[i].item()) for m, v in metrics.items()})
    else:
        row.update(status="failed", reason=reason)
        if result is not None:
            row["loss_history"] = history_summary(result.loss_history, i)
    return row


class _Bar:
    def __init__(self, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(total=None, desc=desc, unit="it", leave=False, file=sys.stderr, dynamic_ncols=True)
        self._n = 0

    def update(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._n)
        self._n = done

    def close(self) -> None:
        self._bar.close()


def _progress_bar(desc: str, enabled: bool) -> _Bar | None:
    if not enabled:
        return None
    try:
        return _Bar(desc)
    except ImportError:
        return None
