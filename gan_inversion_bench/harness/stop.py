"""Stopping a long run or search at a safe point, losing nothing: ``gib stop PATH``.

Ctrl-C stops a run at once and loses the batch in flight (up to a batch's work, minutes at a long
protocol); a kill loses as much and leaves its session ``abandoned``. ``gib stop RUN`` instead writes
the request file ``RUN/STOP`` into every run folder under ``RUN`` that a live run holds (its ``.lock``).
The run looks for the file after it has stored each batch (rank 0, which tells every rank under
``torchrun``), stops there, removes the file, records its session as ``stopped`` and exits with
:data:`EXIT_STOPPED` (75, ``EX_TEMPFAIL``: run the same command again to resume). A request that comes
after the last batch was stored is removed as the run finishes; one a killed run left is removed when
the next run takes the folder's lock. ``gib stop --wait`` returns once the runs have let go of their locks.

A ``gib tune`` search is stopped the same way between trials: it holds the lock ``J.lock`` beside its
journal ``J`` (so two searches never write one journal), and ``gib stop J`` (or a folder holding the
journal) writes ``J.STOP``. The search stops after its trial in flight is journalled, and the same
command resumes it from the journal (:mod:`gan_inversion_bench.tune_journal`).

Only a regular file counts as a request; the toolkit never follows a link named ``STOP`` (a run
folder may come from someone else) and never writes through one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..safe_paths import CLOEXEC, NOFOLLOW, UnsafePathError, create_new
from .config import RunError
from .folder import exclusive_lock, holder_text

#: the request file in a run folder (a tune journal's is ``<journal>.STOP``)
STOP_FILE = "STOP"
#: a run's exit status after it stopped on request (``EX_TEMPFAIL`` of sysexits.h: try again to resume)
EXIT_STOPPED = 75
#: how deep below the folder given to ``gib stop`` run folders are looked for (a claim check's are 2 deep)
SEARCH_DEPTH = 3
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StopRequested(Exception):
    """The run stopped between batches (a search between trials) because a request file asked it to;
    its results are stored."""


@dataclass(frozen=True)
class Stoppable:
    """What ``gib stop`` can ask: a run folder (``kind`` "run") or a ``gib tune`` journal ("search"),
    with the lock its process holds and the request file it reads."""

    path: Path
    kind: str
    lock: Path
    request: Path

    @property
    def step(self) -> str:
        """What it finishes before it stops."""
        return "its current batch" if self.kind == "run" else "its trial in flight"


def run_place(run_dir: Path) -> Stoppable:
    return Stoppable(run_dir, "run", run_dir / ".lock", run_dir / STOP_FILE)


def journal_place(journal: Path) -> Stoppable:
    """A tune journal ``J``: lock ``J.lock``, request ``J.STOP`` beside it."""
    return Stoppable(journal, "search", journal.with_name(journal.name + ".lock"),
                     journal.with_name(f"{journal.name}.{STOP_FILE}"))


def is_request(path: Path) -> bool:
    """Whether ``path`` is a regular file (a link or anything else there is not a request)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_request(path: Path) -> bool:
    """Remove a request file (a link there is removed, never followed); whether one was there."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        path.unlink()
    except OSError:
        return False
    return True


def stop_requested(run_dir: Path) -> bool:
    """Whether ``run_dir/STOP`` is a request (:func:`is_request`)."""
    return is_request(run_dir / STOP_FILE)


def clear_stop(run_dir: Path) -> bool:
    """Remove ``run_dir/STOP``; whether one was there."""
    return remove_request(run_dir / STOP_FILE)


def holder_of(lock_path: Path) -> str | None:
    """Who holds the lock file ``lock_path`` (``pid N on HOST``), or None when no live process holds it. The
    file is opened read-only, without following a link; only a regular file is probed."""
    import fcntl

    try:
        fd = os.open(lock_path, os.O_RDONLY | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0))
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


def lock_holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir``'s run lock (:func:`holder_of` its ``.lock``)."""
    return holder_of(run_dir / ".lock")


def run_folders(root: Path, depth: int = SEARCH_DEPTH, markers: tuple[str, ...] = (".lock",)) -> list[Path]:
    """``root`` and the folders up to ``depth`` levels below it that hold one of ``markers`` (a regular file:
    the run lock by default), in order; links are not followed."""
    return [d for d in _folders(root, depth) if any(_holds_file(d, m) for m in markers)]


def _holds_file(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` is a regular file itself (a link to one is not)."""
    return (folder / name).is_file() and not (folder / name).is_symlink()


def _folders(root: Path, depth: int) -> list[Path]:
    found, level = [], [root]
    for _ in range(depth + 1):
        found += level
        level = sorted(c for d in level for c in _subfolders(d))
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def journals(folder: Path) -> list[Path]:
    """The tune journals in ``folder`` that have a lock beside them: a regular file ``J.lock`` whose ``J`` is a
    regular SQLite file (so another ``*.lock``, such as a claim check's ``runs.json.lock``, is not one)."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
    except OSError:
        return []
    return [folder / n[:-5] for n in names if n.endswith(".lock") and n != ".lock" and _is_sqlite(folder / n[:-5])]


def _is_sqlite(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.pread(fd, len(_SQLITE_MAGIC), 0) == _SQLITE_MAGIC
    finally:
        os.close(fd)


def stoppables(root: Path) -> list[Stoppable]:
    """``root`` as a tune journal (a file), or the run folders and tune journals at or below it (a folder)."""
    if root.is_file():
        return [journal_place(root)]
    return [p for d in _folders(root, SEARCH_DEPTH)
            for p in ([run_place(d)] if _holds_file(d, ".lock") else []) + [journal_place(j) for j in journals(d)]]


def request_stop(root: Path) -> list[tuple[Stoppable, str]]:
    """Ask every live run or search in ``root`` (a run folder, a folder of them such as a claim check's, a tune
    journal or a folder holding one) to stop after its current batch or trial: each gets its request file.
    Returns (what, holder) pairs; a :class:`RunError` naming ``root`` when nothing there is in progress."""
    if not root.exists():
        raise RunError(f"{root}: no such folder or file; name a run folder (gib run --out), a folder of them, or a "
                       f"tune journal (gib tune --journal)")
    places = stoppables(root)
    live = [(p, holder) for p in places if (holder := holder_of(p.lock))]
    if not live:
        if root.is_file():
            hint = (f"; a search's journal lies beside the profile it writes (--out): "
                    f"{root.with_name(root.stem + '.journal.sqlite')}" if root.suffix == ".json" else "")
            raise RunError(f"{root}: no gib tune holds this journal ({journal_place(root).lock} is not locked), so "
                           f"there is nothing to stop{hint}")
        where = "none is held by a live process" if places else "none was found"
        raise RunError(f"{root}: nothing is in progress there (run folders with a .lock, tune journals with a "
                       f"<journal>.lock: {where} up to {SEARCH_DEPTH} levels down), so there is nothing to stop")
    for p, _ in live:
        _write_request(p.request)
    return live


def _write_request(path: Path) -> None:
    """Create the request file ``path`` (never through a link; an existing request file is kept)."""
    try:
        os.close(create_new(path))
    except FileExistsError:
        if not is_request(path):
            raise UnsafePathError(f"{path}: refused: it exists and is not a regular file (a link is never written "
                                  f"through); remove it and ask again") from None


def wait_until_stopped(places: list[Stoppable], timeout: float | None = None, echo: Callable[[str], None] = print,
                       poll: float = 0.5) -> list[Stoppable]:
    """Wait until no live process holds the lock of any of ``places`` (saying so for each as it stops), or until
    ``timeout`` seconds have passed; returns those still held then."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = list(places)
    while waiting:
        for p in [p for p in waiting if holder_of(p.lock) is None]:
            echo(f"{p.path}: the {p.kind} has stopped")
            waiting.remove(p)
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
    return waiting


@contextlib.contextmanager
def search_lock(journal: Path, echo: Callable[[str], None]) -> Iterator[Stoppable]:
    """Hold the lock of the tune journal ``journal`` while a search writes it (a second search refuses with a
    :class:`RunError` naming the holder); a request a stopped or killed search left is removed."""
    place = journal_place(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(place.lock, lambda holder: f"tuning journal {journal} is in use by {holder} (another gib "
                        "tune writing it); wait for it to finish, or give this search its own --out or --journal"):
        if remove_request(place.request):
            echo(f"removed a stop request ({place.request}) left after its search had ended")
        yield place
