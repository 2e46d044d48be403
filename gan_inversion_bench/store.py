"""SQLite result store, one database per run folder (``RUN_DIR/results.sqlite``).

Every (method, image) result is one self-describing row written in its own transaction as
soon as it is complete, after its PNG has been written to a temporary name and renamed into
place: a crash never leaves a half-written row or a row pointing to a missing file. The
primary key (method_key, image_id) makes a result unique; ``method_key`` hashes the method's
name, version and settings, so resuming never recomputes a finished pair.

Schema changes are additive: a column added after schema version 1 is listed in
:data:`ADDED_COLUMNS` and added with ``ALTER TABLE … ADD COLUMN`` when an older database is
opened for writing; reading an older database without migrating it gives ``None`` for the
missing columns, so old run folders stay readable (also read-only ones).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .safe_paths import WHY

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    argv TEXT,
    host TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS timings (
    method_key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('prepare', 'latency', 'calibration')),
    seconds REAL NOT NULL,
    images INTEGER,
    batch_size INTEGER,
    device TEXT,
    timer TEXT,
    note TEXT,
    session INTEGER,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    method_key TEXT NOT NULL,
    image_id TEXT NOT NULL,
    method TEXT NOT NULL,
    method_version TEXT NOT NULL,
    image_set TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason TEXT,
    psnr REAL, ssim REAL, lpips REAL, mse REAL,
    final_loss REAL,
    time_s REAL,
    timer TEXT,
    peak_mem_mb REAL,
    mem_kind TEXT,
    iterations INTEGER,
    seed INTEGER,
    batch_size INTEGER,
    precision TEXT,
    device TEXT,
    generator TEXT,
    split TEXT,
    method_settings TEXT,
    prepared TEXT,
    loss_history TEXT,
    metric_conventions TEXT,
    versions TEXT,
    code_revision TEXT,
    recon_path TEXT,
    session INTEGER,
    created TEXT NOT NULL,
    PRIMARY KEY (method_key, image_id)
);
"""

#: columns added after schema version 1: name → SQL type (version 2: throughput accounting;
#: version 3: self-describing records of the method contract v2; version 4: restoration tasks)
ADDED_COLUMNS = {
    "flops_per_iteration": "REAL",  # FLOPs of one iteration for one image (perf.count_flops)
    "tflops": "REAL",               # achieved TFLOP/s of the timed batch
    "peak_fraction": "REAL",        # tflops / the device's dense peak at the run's precision (None: unknown)
    "flops_fixed": "REAL",          # FLOPs per image of one invert call outside the iterations (v3)
    "perceptual": "TEXT",           # JSON: the perceptual networks' weight sources and hashes (v3)
    "condition": "TEXT",            # JSON: the image's class for a conditional generator, else null (v3)
    "ms_ssim": "REAL",              # MS-SSIM (metrics.CONVENTIONS["ms_ssim"]: scales by resolution) (v3)
    "capacity": "TEXT",             # JSON: the method's codes per image (InversionMethod.capacity) (v3)
    "trace": "TEXT",                # JSON: MSE/PSNR (LPIPS at a few points), time, FLOPs at log-spaced iterations (v3)
    "restarts": "TEXT",             # JSON: K, the best restart (lowest final loss), every restart's metrics (v3)
    "budget": "TEXT",               # JSON: a compute budget (seconds/FLOPs), its limits and the binding one (v3)
    "task": "TEXT",                 # JSON: the restoration task, its settings and operator (tasks.py) (v4)
    "psnr_hole": "REAL",            # inpainting: PSNR inside the hole only (metrics.region_metrics) (v4)
    "mse_hole": "REAL",             # inpainting: MSE inside the hole only (v4)
}

RESULT_COLUMNS = (
    "method_key", "image_id", "method", "method_version", "image_set", "status", "reason", "psnr", "ssim",
    "lpips", "mse", "final_loss", "time_s", "timer", "peak_mem_mb", "mem_kind", "iterations", "seed",
    "batch_size", "precision", "device", "generator", "split", "method_settings", "prepared", "loss_history",
    "metric_conventions", "versions", "code_revision", "recon_path", "session", "created",
    *ADDED_COLUMNS,
)
JSON_COLUMNS = {"generator", "method_settings", "prepared", "loss_history", "metric_conventions", "versions", "split",
                "perceptual", "condition", "capacity", "trace", "restarts",
                "budget", "task"}


def refuse_unsafe_files(path: Path, writing: bool) -> None:
    """The SQLite database ``path`` (a run's, a tune journal) and its side files must be absent or regular files
    (never links); for writing, also files with one name only (a hard link would change another file). The
    ``-shm`` is written by every connection to a WAL database, read-only ones included, so it must never be a
    hard link. A :class:`StoreError` names the file."""
    shm = path.with_name(path.name + "-shm")
    for p in (path, *(path.with_name(path.name + s) for s in ResultStore.SIDE_FILES)):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"{p}: cannot be checked ({e})") from None
        if stat.S_ISLNK(st.st_mode):
            raise StoreError(f"{p}: refused: a symlink to {os.readlink(p)} (not followed); {WHY}")
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{p}: refused: not a regular file")
        if p == shm and st.st_nlink != 1:  # found by the property test (a -shm linked to a file outside)
            raise StoreError(f"{p}: refused: a hard link ({st.st_nlink} names): SQLite writes its shared-memory "
                             f"index into this file whenever the database is opened, even to read it, which would "
                             f"change the file under its other name(s); delete it (SQLite makes a new one) while no "
                             f"process uses this run folder")
        if writing and st.st_nlink != 1:
            raise StoreError(f"{p}: refused: a hard link ({st.st_nlink} names): writing would also change the file "
                             f"under its other name(s); replace it with a copy of its own to resume here")


#: how an error names a JSON value's type (bool before int: True is an int to Python)
_JSON_TYPES = ((dict, "a JSON object"), (list, "a JSON array"), (str, "a JSON string"), (bool, "true or false"),
               (int, "an integer"), (float, "a number"))
_ALTERED = "not what this toolkit writes (the run folder was altered); restore it from a copy"


def json_value(value: Any, shape: Any, where: str) -> Any:
    """``value`` (JSON from a run folder, which may come from someone else) where it is null or has ``shape``: a
    type (``dict``: a JSON object, ``list``, ``str``, ``int``) or ``{key: shape}``, an object whose keys have those
    shapes where present (``...``: every key); else a :class:`StoreError` naming ``where`` (the file and
    the meta key or column) and what was expected."""
    if value is None:
        return None
    kind = dict if isinstance(shape, dict) else shape
    if not isinstance(value, kind):
        expected, found = (next((name for t, name in _JSON_TYPES if issubclass(k, t)), k.__name__)
                           for k in (kind, type(value)))  # e.g. bytes: a BLOB where a number goes
        raise StoreError(f"{where}: expected {expected}, found {found} ({json.dumps(value, default=repr)[:60]}): "
                         f"{_ALTERED}")
    for key, item in value.items() if isinstance(shape, dict) else ():
        if key in shape or ... in shape:
            json_value(item, shape.get(key, shape.get(...)), f"{where}, key {key!r}")
    return value


def meta_value(store: ResultStore, key: str, shape: Any) -> Any:
    """The meta data ``key`` of a run's database (None where absent) checked by :func:`json_value`, or refused."""
    where = f"{store.path}: meta key {key!r}"
    try:
        return json_value(store.get_meta(key), shape, where)
    except ValueError as e:  # not JSON
        raise StoreError(f"{where}: not JSON ({e}): {_ALTERED}") from None


def check_plain_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse (:class:`StoreError` naming ``path``) a database whose schema holds more than this toolkit writes,
    tables and indexes. A view (or a virtual table) under one of its table names runs its own query on every
    read (an endless recursive one hung every command that read the folder), and a trigger runs on every
    write; both are refused before any other query."""
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    odd = [f"{t} {n!r}" for t, n, sql in rows
           if t not in ("table", "index") or str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL")]
    if odd:
        raise StoreError(f"{path}: not a database of this toolkit: its schema holds {', '.join(odd)}, where this "
                         "toolkit writes only plain tables and indexes; if the folder came from someone else, do "
                         "not use it")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def method_key(name: str, version: str, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    blob = json.dumps({"name": name, "version": version, "settings": settings, "extra": extra or {}},
                      sort_keys=True, default=str)
    return f"{name}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _loads(text: Any) -> Any:
    """A JSON column's value; before schema version 3 ``split`` held the raw setting (e.g. a name)."""
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


#: SQLite's primary result code for a damaged database file ("database disk image is malformed")
_SQLITE_CORRUPT = 11


class StoreError(RuntimeError):
    pass


class ResultStore:
    """Thin wrapper around the run's SQLite database.

    ``create=False`` opens it read-only (a ``file:…?mode=ro`` URI), so tables and reports work on a
    read-only run folder; where SQLite cannot set up its WAL index there (no ``-shm`` and no right
    to create one), it opens the file as immutable. The database and its side files must be regular
    files, never symbolic links (:mod:`gan_inversion_bench.safe_paths`)."""

    FILENAME = "results.sqlite"
    #: SQLite's files next to the database
    SIDE_FILES = ("-wal", "-shm", "-journal")

    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.FILENAME
        self.immutable = False  # opened read-only as immutable (changes still in a -wal are not seen)
        refuse_unsafe_files(self.path, create)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.run_dir} is not a run folder: {self.FILENAME} not found")
        try:
            self.conn = self._connect(create)
            if create:
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.executescript(SCHEMA)
                self._set_default("schema_version", str(SCHEMA_VERSION))
                self._migrate()
            self._columns = [r[1] for r in self.conn.execute("PRAGMA table_info(results)")]
            self._check_integrity()
        except sqlite3.DatabaseError as e:
            if getattr(self, "conn", None) is not None:
                self.conn.close()
            if (getattr(e, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_CORRUPT:
                # a damaged page met before quick_check ran (e.g. by the read-only probe or a migration)
                raise StoreError(self._damaged(f"SQLite: {e}")) from None
            raise StoreError(f"{self.path}: not a usable results database ({e}){self._journal_note()}") from None

    def _journal_note(self) -> str:
        journal = self.path.with_name(self.FILENAME + "-journal")
        if not journal.is_file():
            return ""
        return (f"; {journal.name} is present: a rollback journal, which this toolkit's databases (WAL mode) "
                f"never write, so another program left it or it was planted; SQLite must roll the database "
                f"back from it before reading, which a read-only open cannot do: if the folder came from "
                f"someone else, restore it from a copy; if you know the journal is stray, move it out of the folder")

    def _damaged(self, detail: str) -> str:
        return (f"{self.path}: the results database is damaged ({detail}); none of its rows can be "
                f"trusted: restore the folder from a copy, or run into a new --out folder")

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` on open (every page and row of every table is read; indexes are not
        cross-checked): a damaged database is refused as a whole, so no row of it is counted as done
        and no resume writes into it (milliseconds for a run's database). A damaged page that an
        earlier statement of the open meets (``SQLITE_CORRUPT``) is refused with the same message."""
        problems = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            self.conn.close()
            raise StoreError(self._damaged(f"SQLite quick_check: {'; '.join(problems)}"))

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            return self._plain(sqlite3.connect(self.path, timeout=30, isolation_level=None))
        uri = self.path.resolve().as_uri()
        conn = None
        try:
            conn = self._plain(sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None))
            conn.execute("SELECT 1 FROM results LIMIT 1")
            return conn
        except sqlite3.OperationalError as e:
            if conn is not None:
                conn.close()
            if "unable to open" not in str(e):  # e.g. no results table, or busy: not a read-only folder
                raise
        self.immutable = True  # e.g. a WAL database in a folder where the -shm cannot be created
        conn = self._plain(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None))
        conn.execute("SELECT 1 FROM results LIMIT 1")
        return conn

    def _plain(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        try:
            check_plain_schema(conn, self.path)
        except Exception:  # refused, or unreadable (e.g. no -shm can be made): closed either way
            conn.close()
            raise
        return conn

    def _migrate(self) -> None:
        """Add the columns of later schema versions to an older database (``ALTER TABLE ADD COLUMN``)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        missing = [(c, t) for c, t in ADDED_COLUMNS.items() if c not in have]
        if missing:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for c, t in missing:
                    self.conn.execute(f"ALTER TABLE results ADD COLUMN {c} {t}")
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                                  (str(SCHEMA_VERSION),))
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- meta -------------------------------------------------------------------------------
    def _set_default(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                          (key, json.dumps(value, sort_keys=True, default=str)))

    # ---- sessions -----------------------------------------------------------------------------
    def start_session(self, argv: list[str], host: str, pid: int) -> int:
        cur = self.conn.execute("INSERT INTO sessions(started, status, argv, host, pid) VALUES (?, 'running', ?, ?, ?)",
                                (now(), json.dumps(argv), host, pid))
        assert cur.lastrowid is not None  # an INSERT sets it
        return int(cur.lastrowid)

    def finish_session(self, session: int, status: str) -> None:
        self.conn.execute("UPDATE sessions SET finished = ?, status = ? WHERE id = ?", (now(), status, session))

    SESSION_COLUMNS = ("id", "started", "finished", "status", "host", "pid")

    def sessions(self) -> list[dict[str, Any]]:
        """Every session in order: ``status`` is ``running`` while one runs (or until the next takes the lock
        after a kill: then ``abandoned``), ``finished``, ``interrupted`` (Ctrl-C), ``stopped`` (``gib stop``) or
        ``failed``."""
        cur = self.conn.execute(f"SELECT {', '.join(self.SESSION_COLUMNS)} FROM sessions ORDER BY id")
        return [dict(zip(self.SESSION_COLUMNS, r, strict=True)) for r in cur.fetchall()]

    # ---- results -------------------------------------------------------------------------------
    # ---- one-off and per-image costs (not per result) ----------------------------------------------
    TIMING_COLUMNS = ("method_key", "kind", "seconds", "images", "batch_size", "device", "timer", "note", "session",
                      "created")

    def add_timing(self, row: dict[str, Any]) -> None:
        """One measurement: ``prepare`` (a method's one-off stage), ``latency`` (one image alone) or
        ``calibration`` (the per-iteration time behind a ``--budget-seconds`` budget)."""
        unknown = set(row) - set(self.TIMING_COLUMNS)
        if unknown:
            raise StoreError(f"unknown timing columns {sorted(unknown)}")
        cols = ", ".join(self.TIMING_COLUMNS)
        self.conn.execute(f"INSERT INTO timings({cols}) VALUES ({', '.join('?' for _ in self.TIMING_COLUMNS)})",
                          tuple(row.get(c) if c != "created" else row.get(c) or now() for c in self.TIMING_COLUMNS))

    def timings(self) -> list[dict[str, Any]]:
        """Every timing row (an older database without the table: none)."""
        try:
            cur = self.conn.execute(f"SELECT {', '.join(self.TIMING_COLUMNS)} FROM timings ORDER BY rowid")
        except sqlite3.OperationalError:
            return []
        return [dict(zip(self.TIMING_COLUMNS, r, strict=True)) for r in cur.fetchall()]

    def done_images(self, key: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT image_id FROM results WHERE method_key = ?", (key,))}

    def prepared_states(self, method: str) -> list[tuple[str, Any, int]]:
        """Per stored key of ``method``: the key, one distinct ``prepared`` state under it and its row count."""
        cur = self.conn.execute("SELECT method_key, prepared, COUNT(*) FROM results WHERE method = ? "
                                "GROUP BY method_key, prepared ORDER BY method_key", (method,))
        return [(k, _loads(p) if p is not None else None, n) for k, p, n in cur.fetchall()]

    def batch_size(self, key: str, device: str) -> int | None:
        """The largest batch (images) that ``key``'s stored rows on ``device`` ran at (a last batch is smaller)."""
        row = self.conn.execute("SELECT MAX(batch_size) FROM results WHERE method_key = ? AND device = ?",
                                (key, device)).fetchone()
        return int(row[0]) if row and row[0] else None

    def add_results(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert rows in one transaction (all or nothing)."""
        rows = list(rows)
        placeholders = ", ".join("?" for _ in RESULT_COLUMNS)
        values = []
        for row in rows:
            unknown = set(row) - set(RESULT_COLUMNS)
            if unknown:
                raise StoreError(f"unknown result columns {sorted(unknown)}")
            values.append(tuple(json.dumps(row.get(c), sort_keys=True, default=str) if c in JSON_COLUMNS
                                else row.get(c) for c in RESULT_COLUMNS))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(f"INSERT INTO results({', '.join(RESULT_COLUMNS)}) VALUES ({placeholders})", values)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite already rolled back after e.g. SQLITE_FULL; keep the real error
                self.conn.execute("ROLLBACK")
            raise

    def results(self) -> list[dict[str, Any]]:
        """Every row; columns an older (unmigrated) database lacks are ``None``."""
        present = [c for c in RESULT_COLUMNS if c in self._columns]
        cur = self.conn.execute(f"SELECT {', '.join(present)} FROM results ORDER BY method, image_id")
        out = []
        for r in cur.fetchall():
            d = dict.fromkeys(RESULT_COLUMNS)
            d.update(zip(present, r, strict=True))
            for c in JSON_COLUMNS:
                if d[c] is not None:
                    d[c] = _loads(d[c])
            out.append(d)
        return out
