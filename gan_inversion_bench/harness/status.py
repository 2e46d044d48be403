"""Where runs stand: ``gib status RUN``, for runs that take hours.

For every run folder at or up to 3 levels below ``RUN`` (one holding ``.lock`` or ``results.sqlite``,
so an archive too): whether a live process holds it (its ``.lock``) and whether it was asked to stop
(:mod:`.stop`), per method how many of the image set's images are stored (and how many failed), the
last session, and for a live run the time per image its session has taken between its first and
last stored batch, with the time left at that pace. A ``gib tune`` journal (``RUN`` itself, or one with its
``.lock`` beside it in a folder at or below ``RUN``) shows whether its search runs and, per unfinished
search, the trials journalled. The databases are opened read-only (SQLite may make its ``-wal``/``-shm``
side files again, as for ``gib table``); nothing else in the folder changes.
"""
from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import ResultStore, StoreError, meta_value
from .stop import SEARCH_DEPTH, Stoppable, holder_of, is_request, lock_holder, run_folders, stop_requested, stoppables


def folder_status(run_dir: Path) -> dict[str, Any]:
    """One run folder: ``holder`` (None when no live run holds it), ``stop_requested``, ``images`` (the image
    set's size, None where not recorded yet), ``methods`` (per method key in the order first stored: name,
    stored, failed, and the seconds per image of the live session under that key, or None) and ``session``
    (the last one)."""
    out: dict[str, Any] = {"folder": run_dir, "holder": lock_holder(run_dir), "stop_requested": stop_requested(run_dir),
                           "images": None, "methods": [], "session": None}
    if not (run_dir / ResultStore.FILENAME).is_file():
        return out
    with ResultStore(run_dir, create=False) as store:
        out["images"] = (meta_value(store, "image_set", {"n": int}) or {}).get("n")
        counts = store.conn.execute("SELECT method_key, method, COUNT(*), SUM(status = 'failed') FROM results "
                                    "GROUP BY method_key ORDER BY MIN(created)").fetchall()
        sessions = store.sessions()
        out["session"] = sessions[-1] if sessions else None
        made: dict[str, list[str]] = {}
        if out["holder"] and sessions:
            for key, created in store.conn.execute("SELECT method_key, created FROM results WHERE session = ? "
                                                   "ORDER BY created", (sessions[-1]["id"],)):
                made.setdefault(key, []).append(created)
    out["methods"] = [(name, n, failed or 0, _pace(made.get(key, []))) for key, name, n, failed in counts]
    return out


def _pace(created: list[str]) -> float | None:
    """Seconds per stored image between the first and the last stored batch of a session (the first batch's
    own time includes the preparation and warm-up, so it is left out)."""
    if not created:
        return None
    first, last = (datetime.datetime.fromisoformat(created[i]) for i in (0, -1))
    after_first = sum(c != created[0] for c in created)
    return (last - first).total_seconds() / after_first if after_first else None


def status_lines(root: Path) -> list[str]:
    """A paragraph per run folder at or below ``root`` (a :class:`~.config.RunError` where there is none)."""
    from .config import RunError

    folders = run_folders(root, markers=(".lock", ResultStore.FILENAME)) if root.is_dir() else []
    searches = [p for p in stoppables(root) if p.kind == "search"] if root.exists() else []
    if not folders and not searches:
        raise RunError(f"{root}: no run folder (a .lock or {ResultStore.FILENAME} file) and no tune journal (with a "
                       f"<journal>.lock beside it) at or up to {SEARCH_DEPTH} levels below it")
    lines = [line for p in searches for line in _refused(root, p.path, _search_lines, p)]
    for d in folders:
        lines += _refused(root, d, _folder_lines, d)
    return lines


def _refused(root: Path, where: Path, lines_of: Callable[[Any], list[str]], item: Any) -> list[str]:
    """``lines_of(item)``, or one line saying why ``where`` was refused, so that one bad folder below ``root`` (a
    linked database, a crafted journal) does not hide the others; ``root`` itself refused is the command's error."""
    from ..tune_journal import JournalMismatch

    try:
        return lines_of(item)
    except (StoreError, JournalMismatch) as e:
        if where == root:
            raise
        return [f"{where}: refused: {e}"]


def _folder_lines(d: Path) -> list[str]:
    """A run folder's paragraph."""
    s = folder_status(d)
    state = f"running ({s['holder']})" if s["holder"] else "not running"
    if s["stop_requested"]:
        state += ", asked to stop after its current batch" if s["holder"] else ", a stop request left behind"
    last = s["session"]
    if last:
        ended = last["status"] if s["holder"] or last["status"] != "running" else (
            "never ended (killed, or the folder was copied while it ran)")
        state += f"; last session {ended}, started {last['started']}"
        state += f", ended {last['finished']}" if last["finished"] else ""
    lines = [f"{d}: {state}"]
    for method, stored, failed, pace in s["methods"]:
        lines.append(f"  {method}: {_count_text(stored, failed, s['images'], pace)}")
    if not s["methods"]:
        lines.append("  no result stored yet")
    return lines


def _search_lines(place: Stoppable) -> list[str]:
    """A ``gib tune`` search: live or not, asked to stop, and per unfinished study its trials journalled."""
    from ..tune_journal import journal_summary

    holder = holder_of(place.lock)
    state = f"search running ({holder})" if holder else "no search running"
    if is_request(place.request):
        state += ", asked to stop after its trial in flight" if holder else ", a stop request left behind"
    studies = journal_summary(place.path) if place.path.is_file() else []
    lines = [f"{place.path}: {state}"]
    lines += [f"  {s['method']}: {s['journalled']} of {s['trials']} trials journalled ({s['complete']} complete, "
              f"{s['pruned']} pruned)" for s in studies]
    return lines + ([] if studies else ["  no unfinished search journalled (a finished one leaves its entry)"])


def _count_text(stored: int, failed: int, total: int | None, pace: float | None) -> str:
    text = f"{stored} of {total} images stored" if total else f"{stored} images stored"
    text += f" ({failed} failed)" if failed else ""
    if pace and total and stored < total:
        text += f"; {pace / 60:.1f} min per image in this session, about {(total - stored) * pace / 60:.0f} min left"
    return text
