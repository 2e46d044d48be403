"""Files under a run folder that may come from someone else.

Run folders travel (a tarball, a CI artefact), so what is inside one is untrusted input: a planted
symbolic link or a crafted database row must never make the toolkit read, write, rename or delete a
file outside the folder. Every path under a run folder goes through this module:

* :func:`problem` / :func:`inside`: a path relative to the run folder (from the toolkit or from a
  database row) is refused when it is absolute, contains ``..`` or a NUL, passes through a symbolic
  link (none is ever followed, not even one pointing back inside), or resolves outside the folder;
* :func:`make_dirs` creates folders one level at a time, refusing links and non-folders;
* :func:`create_new` creates a file with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never an existing file,
  never through a link), :func:`temp_name` gives it an unpredictable name and :func:`write_atomic`
  writes, fsyncs and renames it into place (a rename replaces a link, it never writes through it);
* :func:`open_regular` opens a file for reading with ``O_NOFOLLOW`` and only if it is a regular file
  (a planted FIFO cannot block a reader);
* :func:`torch_save_atomic` / :func:`torch_load_cached`: a cache entry (a method's learned state,
  the targets' latents) saved through a new temporary file and a rename, and read back only from a
  regular file with ``weights_only=True``; an unreadable entry is ``None`` (recomputed), never trusted;
* :func:`remove_tree` never deletes through a link (``shutil.rmtree`` itself never follows links
  inside the tree);
* :func:`new_locked_folder` makes a temporary folder locked (``flock``) while it is in use, and
  :func:`remove_unlocked_folders` deletes those a killed process left (real folders only, never a
  link, never one whose lock a live process holds).

A refusal is an :class:`UnsafePathError` (a ``ValueError``, so the command line prints one line)
naming the path and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any, BinaryIO

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: why links are refused, appended to messages where the user has to act
WHY = ("a run folder may come from someone else, so the toolkit never follows a symbolic link inside it "
       "nor reads or writes outside it")


class UnsafePathError(ValueError):
    """A path under a run folder was refused; the message names it and says why."""


def _link_text(path: Path) -> str:
    try:
        return f" to {os.readlink(path)}"
    except OSError:
        return ""


def problem(root: Path, rel: str | PurePath) -> str:
    """Why ``root / rel`` may not be used ('' when it may): ``rel`` absolute, with ``..`` or a NUL,
    empty, through a symbolic link (checked on every component that exists), or resolving outside
    ``root``. ``root`` itself is the user's choice and may be a link."""
    text = os.fspath(rel)
    if "\x00" in text:
        return "the path contains a NUL character"
    path = PurePath(text)
    if path.is_absolute():
        return "an absolute path (paths in a run folder are relative to it)"
    if ".." in path.parts:
        return "the path contains '..'"
    if not path.parts:
        return "an empty path"
    current = root
    try:
        for part in path.parts:
            current = current / part
            if current.is_symlink():
                return f"{current.relative_to(root).as_posix()} is a symlink{_link_text(current)} (not followed)"
        if not (root / path).resolve().is_relative_to(root.resolve()):
            return "outside the run folder"
    except OSError as e:  # e.g. a name too long for the file system
        return f"cannot be checked ({e.strerror or e})"
    return ""


def inside(root: Path, rel: str | PurePath) -> Path:
    """``root / rel`` after :func:`problem` found nothing wrong; else :class:`UnsafePathError`."""
    why = problem(root, rel)
    if why:
        raise UnsafePathError(f"{root / os.fspath(rel).replace(chr(0), '?')}: refused: {why}; {WHY}")
    return root / rel


def refuse_links(root: Path, names: Iterable[str]) -> None:
    """Refuse when any of the entries ``names`` of ``root`` is a symbolic link (absent ones are fine)."""
    for name in names:
        inside(root, name)


def make_dirs(root: Path, rel: str | PurePath) -> Path:
    """Create ``root / rel`` one folder at a time; a link or a non-folder on the way is refused."""
    current = root
    for part in PurePath(inside(root, rel).relative_to(root)).parts:
        current = current / part
        with contextlib.suppress(FileExistsError):
            current.mkdir()
        if current.is_symlink() or not current.is_dir():
            kind = "a symlink (not followed)" if current.is_symlink() else "not a folder"
            raise UnsafePathError(f"{current}: refused: {kind}; {WHY}")
    return current


def temp_name(path: Path) -> Path:
    """A fresh, unpredictable temporary name next to ``path`` (``.NAME.PID.RANDOM.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def create_new(path: Path, mode: int = 0o644) -> int:
    """A file descriptor of a new file ``path`` (``O_EXCL | O_NOFOLLOW``: never an existing file or a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)


def refuse_non_regular(path: Path) -> None:
    """Refuse ``path`` if it exists as anything but a regular file (a link, a folder, a FIFO, ...)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{path}: refused: a symlink{_link_text(path)} (not followed); {WHY}")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path}: refused: not a regular file")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a new temporary file, fsync it and rename it onto ``path`` (a regular file
    or absent; a link or anything else there is refused)."""
    refuse_non_regular(path)
    tmp = temp_name(path)
    try:
        with os.fdopen(create_new(tmp), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading without following a final link, and only if it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{path}: refused: a symlink (not followed); {WHY}") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path}: refused: not a regular file")
    return os.fdopen(fd, "rb")


def torch_save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a new temporary file (``O_EXCL | O_NOFOLLOW``, an unpredictable name), then
    renamed onto ``path`` (its folder is created): a link planted there is replaced, never written
    through. (The harness refuses a run folder whose ``cache`` folder is a link before any method runs.)"""
    import torch  # only the cache helpers need it

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with os.fdopen(create_new(tmp), "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def torch_load_cached(path: Path, what: str = "cache file", then: str = "recomputing") -> Any | None:
    """The entry ``torch.save`` wrote at ``path`` (``weights_only=True``, on the CPU), or None: a
    missing file silently; an unreadable or corrupt one, a symbolic link or anything but a regular
    file (never opened through) with a warning "ignoring unreadable {what} {path}: ...; {then}"."""
    import torch

    if not os.path.lexists(path):
        return None
    try:
        with open_regular(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or planted cache entry is recomputed, never trusted
        warnings.warn(f"ignoring unreadable {what} {path}: {type(e).__name__}: {e}; {then}", stacklevel=2)
        return None


def remove_tree(path: Path) -> None:
    """Delete the folder ``path`` (absent: nothing to do); a link is refused, never followed."""
    if path.is_symlink():
        raise UnsafePathError(f"{path}: refused to delete: a symlink{_link_text(path)} (not followed); {WHY}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        raise UnsafePathError(f"{path}: refused to delete: not a folder")


def lock_folder(path: Path, wait: bool = True) -> int | None:
    """A descriptor of the real folder ``path`` (a link is refused: ``O_NOFOLLOW``) that holds an
    exclusive ``flock`` on it; None when ``wait`` is False and another process holds the lock. On a
    file system without ``flock`` (some network ones) the folder counts as in use when ``wait`` is
    False (nothing is deleted that cannot be checked) and is used unlocked when it is True."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            os.close(fd)
            raise
        if not wait:
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def new_locked_folder(parent: Path, prefix: str, suffix: str) -> tuple[Path, int]:
    """A new folder ``parent/PREFIX<random>SUFFIX`` (``tempfile.mkdtemp``) and the descriptor that
    holds its lock (close it when done), so that :func:`remove_unlocked_folders` in another process
    never takes it for a killed process's (one deleted before it was locked is replaced)."""
    for _ in range(5):
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        with contextlib.suppress(FileNotFoundError):
            fd = lock_folder(path)
            assert fd is not None
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.lstat(path)):
                    return path, fd
            os.close(fd)
    raise OSError(errno.EBUSY, f"cannot keep a temporary folder in {parent}: another process deletes them")


def remove_unlocked_folders(parent: Path, pattern: re.Pattern[str], ours: Callable[[list[str]], bool]) -> int:
    """Delete the real folders directly inside ``parent`` whose names match ``pattern``, whose
    entries satisfy ``ours`` and whose lock no process holds (:func:`new_locked_folder`; the kernel
    drops a killed process's lock); return how many. A link is neither followed nor deleted; a
    folder that cannot be listed or deleted (read-only) is left as it is."""
    removed = 0
    try:
        candidates = [Path(e.path) for e in os.scandir(parent)
                      if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for path in candidates:
        with contextlib.suppress(OSError):
            fd = lock_folder(path, wait=False)  # O_NOFOLLOW: a link put there since the scan is refused
            if fd is None:
                continue  # in use by a live process
            try:
                if ours(os.listdir(fd)):
                    shutil.rmtree(path)  # rmtree itself never follows a link inside the tree
                    removed += 1
            finally:
                os.close(fd)
    return removed
