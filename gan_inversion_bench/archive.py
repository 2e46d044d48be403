"""``gib archive RUN_DIR DEST``: a run folder's records alone, in a file that can be committed.

A run folder holds its database (``results.sqlite``, in WAL mode, so recent rows may still sit in
the ``-wal`` side file), the targets and reconstructions as PNGs, and caches. The records are
what a results page cites and what ``gib table``, ``gib compare`` (also ``--b-run``) and
``gib report`` read; the PNGs can be made again from the image set's description. An archive is
``DEST/results.sqlite``: a consistent copy taken through SQLite's online backup (so the rows in
the ``-wal`` are in it and a run that is still writing is copied as of one transaction), switched
to a rollback journal (one file, no side files to forget) and vacuumed. Its ``meta`` table gains
``archive``: where it came from, when, and what was left out. The archive is a run folder that
the reading commands accept as it is; reconstructions it does not hold are shown as missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .safe_paths import temp_name
from .store import ResultStore, StoreError, now

LEFT_OUT = "targets, reconstructions (PNG) and caches: make them again by running the recorded command"


def archive_run(run_dir: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy the records of ``run_dir`` into ``dest/results.sqlite`` (a new file: an existing one,
    or a side file of one, is refused). Returns what was copied: ``path``, ``records``,
    ``configurations``, ``bytes`` and ``note`` (a caveat, or '')."""
    src, dest = Path(run_dir), Path(dest)
    target = dest / ResultStore.FILENAME
    if src.resolve() == dest.resolve():
        raise StoreError(f"{dest} is the run folder itself; give another folder for the archive")
    for p in (target, *(target.with_name(target.name + s) for s in ResultStore.SIDE_FILES)):
        if os.path.lexists(p):
            raise StoreError(f"{p} already exists; an archive is written only as a new file: choose an "
                             f"empty folder for DEST or move the old archive away")
    dest.mkdir(parents=True, exist_ok=True)
    with ResultStore(src, create=False) as store:
        note = ("" if not store.immutable else
                f"{src} could only be opened as immutable (a read-only folder without its -shm): rows still in "
                f"its -wal are not in the archive; copy the folder somewhere writable and archive that copy")
        tmp = temp_name(target)
        try:
            out = sqlite3.connect(tmp, isolation_level=None)
            try:
                store.conn.backup(out)
                summary = _finish(out, src)
            finally:
                out.close()
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    return {"path": target, "bytes": target.stat().st_size, "note": note, **summary}


def _finish(out: sqlite3.Connection, src: Path) -> dict[str, Any]:
    """Rollback journal, the ``archive`` meta entry, vacuum; the counts of what the copy holds."""
    out.execute("PRAGMA journal_mode=DELETE")
    records = out.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    configurations = out.execute("SELECT COUNT(DISTINCT method_key) FROM results").fetchone()[0]
    info = {"from": str(src), "archived": now(), "records": records, "left_out": LEFT_OUT}
    out.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('archive', ?)", (json.dumps(info, sort_keys=True),))
    out.execute("VACUUM")
    return {"records": records, "configurations": configurations}
