"""The run folder on disk: durable PNGs, the lock, clean-up after a killed run, write failures,
and the test-only fault-injection points.

A PNG is written to a temporary name, fsynced and renamed before its row is committed, so a
killed run never leaves a row without its image; temporary files left by a killed run are
removed when the next run takes the lock. A failed write (full disk, read-only folder) becomes a
:class:`RunError` that says how to resume.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from ..imagesets import ImageSet
from ..store import ResultStore
from .config import RunError

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


def reset_fault_counts() -> None:
    _fault_counts.clear()


def trace_commits(store: ResultStore) -> None:
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
    fsync_dir(path.parent)  # the rename is durable before the row that points to it is committed
    fault_point("png_renamed")


def fsync_dir(folder: Path) -> None:
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


def save_targets(images: ImageSet, run_dir: Path) -> None:
    """The targets as PNGs (and the generated images' ground-truth latents), once."""
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
