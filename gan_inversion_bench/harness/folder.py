"""The run folder on disk: durable PNGs, the lock, clean-up after a killed run, write failures,
and the test-only fault-injection points.

A PNG is written to a temporary name, fsynced and renamed before its row is committed, so a
killed run never leaves a row without its image; temporary files left by a killed run are
removed when the next run takes the lock. A run folder may come from someone else: every path
written under it is checked with :mod:`gan_inversion_bench.safe_paths` (no symbolic link is
followed, nothing outside the folder is touched). A failed write (full disk, read-only folder) becomes a
:class:`RunError` that says how to resume.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import socket
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath

import torch
from PIL import Image

from ..imagesets import ImageSet
from ..safe_paths import (
    CLOEXEC,
    NOFOLLOW,
    WHY,
    UnsafePathError,
    create_new,
    inside,
    make_dirs,
    refuse_links,
    refuse_non_regular,
    temp_name,
    torch_save_atomic,
)
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
#: the entries of a run folder that ``gib run`` writes; none may be a symbolic link (:mod:`..safe_paths`)
RUN_ENTRIES = (".lock", ResultStore.FILENAME, *(f"{ResultStore.FILENAME}{s}" for s in ResultStore.SIDE_FILES),
               "targets", "recon", "cache", "observations")
#: where a killed run may have left ``*.tmp`` files
TEMP_FOLDERS = ("targets", "recon", "cache", "observations")


def save_png(image: torch.Tensor, path: Path) -> None:
    """``[3, H, W]`` in [-1, 1] → 8-bit PNG, written to a new temporary file (``O_EXCL | O_NOFOLLOW``,
    an unpredictable name), fsynced and renamed into place. ``path`` must be absent or a regular file
    (a link there is refused); a caller writing into a run folder checks the path first
    (:func:`prepare_file`)."""
    a = ((image.detach().float().clamp(-1, 1).cpu() + 1) * 127.5).round().to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_non_regular(path)
    tmp = temp_name(path)
    try:
        with os.fdopen(create_new(tmp), "wb") as f:
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


def prepare_file(run_dir: Path, rel: str | PurePath) -> Path:
    """The path of the file ``rel`` of the run folder, checked (no ``..``, no link on the way, not
    outside the folder) and with its folders created safely; :class:`UnsafePathError` if refused."""
    path = inside(run_dir, rel)
    if PurePath(rel).parent.parts:
        make_dirs(run_dir, PurePath(rel).parent)
    return path


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable(run_dir: Path) -> None:
    """Create the run folder if needed, refuse symbolic links among the entries ``gib run`` writes
    (:data:`RUN_ENTRIES`) and prove that a file can be written into it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        refuse_links(run_dir, RUN_ENTRIES)
        # an unpredictable new name: nothing can have been planted there (e.g. a link to another file)
        probe = run_dir / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"output folder {run_dir} is not writable: {e}") from None


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed run left behind (call only while holding the run lock).

    The walk never enters a linked folder; a ``*.tmp`` entry that is a link is removed as a link
    (its target is untouched)."""
    stale = []
    for sub in TEMP_FOLDERS:
        top = run_dir / sub
        if top.is_symlink() or not top.is_dir():
            continue
        for folder, dirs, files in os.walk(top, followlinks=False):
            for name in [*files, *dirs]:
                p = Path(folder) / name
                with contextlib.suppress(OSError):
                    if name.endswith(".tmp") and (p.is_symlink() or stat.S_ISREG(os.lstat(p).st_mode)):
                        p.unlink()  # unlinks the entry itself, never what a link points to
                        stale.append(p)
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
    with exclusive_lock(inside(run_dir, ".lock"), lambda holder: f"run folder {run_dir} is in use by {holder}; "
                        "wait for it to finish or use another --out folder"):
        yield


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created; never through a link) with ``pid N on HOST`` written
    into it; where another process holds it, a :class:`RunError` of ``busy(holder)``."""
    import fcntl

    fd = _open_lock_file(lock_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunError(busy(holder_text(fd))) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def holder_text(fd: int) -> str:
    """What a run wrote into its lock file (``pid N on HOST``), read through the descriptor ``fd``."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


def _open_lock_file(lock_path: Path) -> int:
    """The lock file, opened without following a link; only a regular file with one name is used
    (writing the holder into a hard link would change the other file)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{lock_path}: refused: a symlink (not followed); {WHY}") from None
        raise RunError(f"cannot open the lock file {lock_path}: {e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else (
            f"a hard link ({st.st_nlink} names): writing the holder into it would change the other file")
        raise UnsafePathError(f"{lock_path}: refused: {why}; remove it while no run uses this folder")
    return fd


def save_targets(images: ImageSet, run_dir: Path) -> None:
    """The targets as PNGs (and the generated images' ground-truth latents), once; every path is
    checked (:func:`prepare_file`), so a planted link is refused, never written through."""
    for it in images.items:
        path = prepare_file(run_dir, f"targets/{it.id}.png")
        if not os.path.lexists(path):
            save_png(it.image, path)
    latents = {it.id: it.latent for it in images.items if it.latent is not None}
    path = prepare_file(run_dir, "targets/generated_latents.pt")
    if latents and not os.path.lexists(path):
        torch_save_atomic(latents, path)
