"""Stopping a run between batches, losing nothing: ``gib stop RUN``.

Ctrl-C stops a run at once and loses the batch in flight (up to a batch's work, minutes at a long
protocol); a kill loses as much and leaves its session ``abandoned``. ``gib stop RUN`` instead writes
the request file ``RUN/STOP`` into every run folder under ``RUN`` that a live run holds (its ``.lock``).
The run looks for the file after it has stored each batch (rank 0, which tells every rank under
``torchrun``), stops there, removes the file, records its session as ``stopped`` and exits with
:data:`EXIT_STOPPED` (75, ``EX_TEMPFAIL``: run the same command again to resume). A request that comes
after the last batch was stored is removed as the run finishes; one a killed run left is removed when
the next run takes the folder's lock. ``gib stop --wait`` returns once the runs have let go of their locks.

Only a regular file counts as a request; the toolkit never follows a link named ``STOP`` (a run
folder may come from someone else) and never writes through one.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..safe_paths import CLOEXEC, NOFOLLOW, UnsafePathError, create_new
from .config import RunError
from .folder import holder_text

#: the request file in a run folder
STOP_FILE = "STOP"
#: a run's exit status after it stopped on request (``EX_TEMPFAIL`` of sysexits.h: try again to resume)
EXIT_STOPPED = 75
#: how deep below the folder given to ``gib stop`` run folders are looked for (a claim check's are 2 deep)
SEARCH_DEPTH = 3


class StopRequested(Exception):
    """The run stopped between batches because ``RUN/STOP`` asked it to; its results are stored."""


def stop_requested(run_dir: Path) -> bool:
    """Whether ``run_dir/STOP`` is a regular file (a link or anything else there is not a request)."""
    try:
        return stat.S_ISREG(os.lstat(run_dir / STOP_FILE).st_mode)
    except OSError:
        return False


def clear_stop(run_dir: Path) -> bool:
    """Remove the request file (a link named ``STOP`` is removed, never followed); whether one was there."""
    path = run_dir / STOP_FILE
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        path.unlink()
    except OSError:
        return False
    return True


def lock_holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir``'s run lock (``pid N on HOST``), or None when no live run holds it. The lock
    file is opened read-only, without following a link; only a regular file is probed."""
    import fcntl

    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return holder_text(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def run_folders(root: Path, depth: int = SEARCH_DEPTH, markers: tuple[str, ...] = (".lock",)) -> list[Path]:
    """``root`` and the folders up to ``depth`` levels below it that hold one of ``markers`` (a regular file:
    the run lock by default), in order; links are not followed."""
    found, level = [], [root]
    for _ in range(depth + 1):
        found += [d for d in level if any((d / m).is_file() and not (d / m).is_symlink() for m in markers)]
        level = sorted(c for d in level for c in _subfolders(d))
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def request_stop(root: Path) -> list[tuple[Path, str]]:
    """Ask every live run in ``root`` (a run folder, or a folder of them such as a claim check's) to stop
    after its current batch: each gets ``STOP``. Returns (folder, holder) pairs; a :class:`RunError`
    naming ``root`` when no run is in progress there."""
    if not root.is_dir():
        raise RunError(f"{root}: no such folder; name a run folder (gib run --out) or a folder of them")
    folders = run_folders(root)
    live = [(d, holder) for d in folders if (holder := lock_holder(d))]
    if not live:
        where = "no run holds its lock" if folders else "no run folder (a .lock file) was found"
        raise RunError(f"{root}: no run is in progress there ({where} up to {SEARCH_DEPTH} levels down), so there "
                       f"is nothing to stop")
    for d, _ in live:
        _write_request(d)
    return live


def _write_request(run_dir: Path) -> None:
    """Create ``run_dir/STOP`` (never through a link; an existing request file is kept)."""
    try:
        os.close(create_new(run_dir / STOP_FILE))
    except FileExistsError:
        if not stop_requested(run_dir):
            raise UnsafePathError(f"{run_dir / STOP_FILE}: refused: it exists and is not a regular file (a link is "
                                  f"never written through); remove it and ask again") from None


def wait_until_stopped(folders: list[Path], timeout: float | None = None, echo: Callable[[str], None] = print,
                       poll: float = 0.5) -> list[Path]:
    """Wait until no live run holds the lock of any of ``folders`` (saying so for each as it stops), or until
    ``timeout`` seconds have passed; returns the folders whose run still holds it then."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = list(folders)
    while waiting:
        for d in [d for d in waiting if lock_holder(d) is None]:
            echo(f"{d}: the run has stopped")
            waiting.remove(d)
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
    return waiting
