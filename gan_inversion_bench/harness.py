"""The benchmark harness: one generator × methods × one image set × settings → a run folder.

A run folder holds ``results.sqlite`` (every finished (method, image) result, see
:mod:`~gan_inversion_bench.store`), ``targets/`` and ``recon/<method_key>/`` PNGs, and a
``.lock`` file. Running the same configuration again resumes: finished pairs are skipped.

Timing: on CUDA the inversion of a batch is timed with CUDA events around synchronised work;
on CPU with ``time.perf_counter``. The per-image time is the batch time divided by the batch
size (the table says which timer was used). Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA and the process's peak resident set size on CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from . import __version__
from .imagesets import ImageItem, ImageSet, load_image_set
from .method import InversionFailed, InversionMethod
from .metrics import CONVENTIONS, compute_metrics
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


def save_png(image: torch.Tensor, path: Path) -> None:
    """``[3, H, W]`` in [-1, 1] → 8-bit PNG, written to a temporary name and renamed into place."""
    a = ((image.detach().float().clamp(-1, 1).cpu() + 1) * 127.5).round().to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        Image.fromarray(a.permute(1, 2, 0).numpy()).save(f, format="PNG")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    return max(1, min(n, 16 if device.type == "cpu" else 64))


def history_summary(history: torch.Tensor, column: int, points: int = 200) -> dict[str, list[float]]:
    t = history.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(points, t)).round().astype(int))
    vals = history[idx, column].tolist()
    return {"iteration": idx.tolist(), "loss": [None if v != v else float(v) for v in vals]}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def run(config: RunConfig, out: str | Path, *, echo: Echo = print, progress: bool = True,
        argv: list[str] | None = None) -> Path:
    """Run (or resume) a benchmark into the folder ``out``; returns the folder."""
    run_dir = Path(out).expanduser()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"output folder {run_dir} is not writable: {e}") from None
    device = resolve_device(config.device)
    method_names = config.methods if config.methods else METHODS.names()
    for name in method_names:
        METHODS.get(name)  # unknown names fail before any work
    if config.batch_size is not None and config.batch_size < 1:
        raise RunError(f"batch size must be >= 1, got {config.batch_size}")
    with run_lock(run_dir), ResultStore(run_dir) as store:
        stored = store.get_meta("identity")
        if stored is not None and stored != json.loads(json.dumps(config.identity(), sort_keys=True, default=str)):
            raise RunError(f"run folder {run_dir} was made with a different configuration:\n  stored: {stored}\n"
                           f"  now:    {config.identity()}\nuse another --out folder for a new configuration")
        store.set_meta("identity", config.identity())
        session = store.start_session(argv or sys.argv, socket.gethostname(), os.getpid())
        status = "failed"
        try:
            _run_inner(config, run_dir, store, session, device, method_names, echo, progress)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            echo(f"\nInterrupted. Finished results are kept in {run_dir / ResultStore.FILENAME}; "
                 f"run the same command again to resume.")
            raise
        finally:
            store.finish_session(session, status)
    return run_dir


def _run_inner(config: RunConfig, run_dir: Path, store: ResultStore, session: int, device: torch.device,
               method_names: list[str], echo: Echo, progress: bool) -> None:
    generator = GENERATORS.create(config.generator, **config.generator_options).to(device).eval()
    if not generator.name:
        generator.name = config.generator
    images = load_image_set(config.images, generator, n=config.n_generated, seed=config.seed)
    for f, reason in images.skipped:
        echo(f"skipped {f}: {reason}")
    _save_targets(images, run_dir)
    store.set_meta("image_set", images.describe())
    store.set_meta("generator", generator.describe())
    common = {"generator": generator.describe(), "device": device_name(device), "versions": library_versions(),
              "code_revision": code_revision(), "metric_conventions": CONVENTIONS, "image_set": images.spec}
    for name in method_names:
        method = build_method(name, config)
        method.prepare(generator, seed=config.seed, cache_dir=run_dir / "cache")
        key = method_key(method.name, method.version, method.get_settings(),
                         {"prepared": method.prepared_state(), "profile": config.profile})
        done = store.done_images(key)
        pending = [it for it in images.items if it.id not in done]
        echo(f"{name}: {len(images.items) - len(pending)} done, {len(pending)} to invert "
             f"({config.profile} profile, device {common['device']})")
        bs = config.batch_size or auto_batch_size(len(pending), device)
        for start in range(0, len(pending), bs):
            batch = pending[start:start + bs]
            rows = _invert_batch(method, key, generator, batch, config, device, run_dir, session, common, progress)
            store.add_results(rows)


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
                  device: torch.device, run_dir: Path, session: int, common: dict[str, Any],
                  progress: bool) -> list[dict[str, Any]]:
    targets = torch.stack([it.image for it in batch]).to(device)
    seeds = [image_seed(config.seed, it.id) for it in batch]
    bar = _progress_bar(f"{method.name} [{batch[0].id} … {batch[-1].id}]", progress)
    try:
        with Timer(device) as timer:
            result = method.invert(generator, targets, seeds=seeds, progress=bar.update if bar else None)
    except InversionFailed as e:
        result, failure = None, f"every image of the batch failed: {e}"
    else:
        failure = None
    finally:
        if bar:
            bar.close()
    rows = []
    if result is not None:
        metrics = compute_metrics(result.reconstructions.clamp(-1, 1), targets)
    for i, it in enumerate(batch):
        row: dict[str, Any] = {
            "method_key": key, "image_id": it.id, "method": method.name, "method_version": method.version,
            "image_set": common["image_set"], "iterations": getattr(method.settings, "iterations", None),
            "seed": seeds[i], "batch_size": len(batch), "precision": "fp32", "device": common["device"],
            "generator": common["generator"], "split": getattr(method.settings, "split", None),
            "method_settings": method.get_settings(), "prepared": method.prepared_state(),
            "metric_conventions": common["metric_conventions"], "versions": common["versions"],
            "code_revision": common["code_revision"], "session": session, "created": now(),
            "time_s": timer.seconds / len(batch), "timer": timer.kind + (f", batch of {len(batch)}"),
            "peak_mem_mb": timer.peak_mb, "mem_kind": timer.mem_kind,
        }
        reason = failure or (result.failures.get(i) if result is not None else None)
        if result is not None and reason is None:
            recon_path = run_dir / "recon" / key / f"{it.id}.png"
            save_png(result.reconstructions[i], recon_path)
            row.update(status="ok", recon_path=str(recon_path.relative_to(run_dir)),
                       loss_history=history_summary(result.loss_history, i),
                       final_loss=_finite(result.loss_history[-1, i].item()),
                       **{m: _finite(v[i].item()) for m, v in metrics.items()})
        else:
            row.update(status="failed", reason=reason)
            if result is not None:
                row["loss_history"] = history_summary(result.loss_history, i)
        rows.append(row)
    return rows


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
