"""The journal of a ``gib tune`` search: every finished trial in SQLite, so that an interrupted search
resumes where it stopped and ends with exactly the study an uninterrupted one would have.

A seeded TPE sampler draws each setting from its random state and the finished trials, so a search
restarted from optuna's own storage draws differently from an uninterrupted one (the random state
starts afresh). The journal instead *replays* the finished trials through a new study with the same
seeded sampler: each replayed trial draws its settings (advancing the sampler exactly as before),
checks them against the journal, reports the journalled PSNR at the same iterations (so the pruner
takes the same decisions) and returns the journalled value without inverting anything. The first
new trial then sees the same sampler state and history as it would have without the interruption.

A study is identified by everything that determines it (:func:`study_key`): generator weights,
method, version and settings, the tuning protocol and the code revision. A journal written under any
other key is ignored, and a replayed trial whose draw differs from the journal is refused with the
journal's path. When the search finishes and its profile entry is written, its trials are removed
from the journal (the profile entry keeps every trial).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JournalMismatch", "JournalTrial", "TuneJournal", "journal_summary", "study_key", "trial_text"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    study TEXT NOT NULL, number INTEGER NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
    value REAL, intermediate TEXT NOT NULL, user_attrs TEXT NOT NULL, description TEXT NOT NULL,
    PRIMARY KEY (study, number))
"""


class JournalMismatch(RuntimeError):
    """A journalled trial cannot be replayed: the journal does not belong to this search."""


@dataclass(frozen=True)
class JournalTrial:
    """One finished trial as journalled."""

    number: int
    state: str                         # optuna TrialState name: COMPLETE or PRUNED
    params: dict[str, Any]
    value: float | None
    intermediate: dict[int, float]     # iteration → mean PSNR reported to the pruner
    user_attrs: dict[str, Any]


def study_key(description: dict[str, Any]) -> str:
    """sha256 of the JSON of what determines a study (its generator, method, protocol, code)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


class TuneJournal:
    """The finished trials of one study (``key``) in the SQLite file ``path``."""

    def __init__(self, path: str | Path, description: dict[str, Any]):
        self.path, self.description, self.key = Path(path), description, study_key(description)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.execute(_SCHEMA)
                rows = db.execute("SELECT number, state, params, value, intermediate, user_attrs FROM trials "
                                  "WHERE study = ? ORDER BY number", (self.key,)).fetchall()
        except sqlite3.DatabaseError as e:
            raise JournalMismatch(f"tuning journal {self.path}: not a readable journal ({e}); move it aside "
                                  "or pass another --journal") from e
        try:
            self.trials = {r[0]: JournalTrial(r[0], r[1], dict(json.loads(r[2])), r[3],
                                              {int(k): float(v) for k, v in json.loads(r[4]).items()},
                                              dict(json.loads(r[5]))) for r in rows}
        except (TypeError, ValueError, AttributeError):
            raise JournalMismatch(f"tuning journal {self.path}: a trial's settings, PSNR along the way or attributes "
                                  "are not the JSON a search writes; the journal was edited, move it aside") from None
        missing = sorted(set(range(len(self.trials))) - set(self.trials))
        if missing:
            raise JournalMismatch(f"tuning journal {self.path}: trial {missing[0]} of this search is missing; "
                                  "the journal was edited, move it aside to start the search afresh")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = _open(self.path, writing=True)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def record(self, trial: Any) -> None:
        """Journal a finished optuna trial (``FrozenTrial``), replacing a replayed copy."""
        t = JournalTrial(trial.number, trial.state.name, dict(trial.params), trial.value,
                         {int(k): float(v) for k, v in trial.intermediate_values.items()}, dict(trial.user_attrs))
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (self.key, t.number, t.state, json.dumps(t.params), t.value, json.dumps(t.intermediate),
                        json.dumps(t.user_attrs), json.dumps(self.description, sort_keys=True, default=str)))
        self.trials[t.number] = t

    def replay(self, trial: Any) -> float:
        """Replay journalled trial ``trial.number`` (its settings already drawn on ``trial``): report
        its PSNR along the way to the pruner, and return its value or raise ``TrialPruned`` where it
        was pruned. Raises :class:`JournalMismatch` where the draw or the pruner's decision differs."""
        import optuna

        done = self.trials[trial.number]
        where = f"tuning journal {self.path}, trial {trial.number}"
        if trial.params != done.params:
            raise JournalMismatch(f"{where}: the sampler drew {trial.params}, the journal has {done.params}; "
                                  "the journal is from another search, move it aside to start afresh")
        for key, value in done.user_attrs.items():
            trial.set_user_attr(key, value)
        for step, value in sorted(done.intermediate.items()):
            trial.report(value, step)
            if trial.should_prune():
                if done.state != "PRUNED":
                    raise JournalMismatch(f"{where}: the pruner now stops it at iteration {step}, the journal "
                                          "ran it on; move the journal aside to start afresh")
                raise optuna.TrialPruned(f"replayed from {self.path}")
        if done.state != "COMPLETE" or done.value is None:
            raise JournalMismatch(f"{where}: journalled as {done.state}, but the pruner now lets it finish; "
                                  "move the journal aside to start afresh")
        return float(done.value)

    def finish(self) -> None:
        """Remove this study's trials (its profile entry is written); the file too when it is empty."""
        with self._connect() as db:
            db.execute("DELETE FROM trials WHERE study = ?", (self.key,))
            left = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        if not left:
            self.path.unlink(missing_ok=True)


def journal_summary(path: Path) -> list[dict[str, Any]]:
    """Per study in the journal ``path`` (opened read-only): its ``method``, ``trials`` (the search's number of
    trials), ``journalled`` and the ``complete`` and ``pruned`` among them, in the order first journalled."""
    try:
        db = _open(path, writing=False)
        try:
            rows = db.execute("SELECT description, COUNT(*), SUM(state = 'COMPLETE'), SUM(state = 'PRUNED') FROM "
                              "trials GROUP BY study ORDER BY MIN(rowid)").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise JournalMismatch(f"tuning journal {path}: not a readable journal ({e})") from e
    out = []
    for description, n, complete, pruned in rows:
        try:
            d = json.loads(description)
            out.append({"method": d.get("method"), "trials": (d.get("protocol") or {}).get("trials"),
                        "journalled": n, "complete": complete or 0, "pruned": pruned or 0})
        except (TypeError, ValueError, AttributeError):
            raise JournalMismatch(f"tuning journal {path}: a study's description is not the JSON object a search "
                                  f"writes ({str(description)[:60]!r}); the journal was edited") from None
    return out


def _open(path: Path, writing: bool) -> sqlite3.Connection:
    """The journal ``path``: refused (:class:`JournalMismatch`) where it or a side file is a link, a hard-linked
    ``-shm`` (SQLite writes into it even to read), or its schema holds a view or a trigger (as for a run's
    database, :mod:`.store`); read-only unless ``writing``."""
    from .store import StoreError, check_plain_schema, refuse_unsafe_files

    try:
        refuse_unsafe_files(path, writing)
        db = sqlite3.connect(path, timeout=30) if writing else sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            check_plain_schema(db, path)
        except Exception:  # refused, or unreadable: closed either way
            db.close()
            raise
    except StoreError as e:
        raise JournalMismatch(f"tuning journal {e}") from None
    return db


def trial_text(trial: Any, trials: int) -> str:
    """``trial N (N+1 of T) state, value, params``: N is optuna's number, which the entry and its
    closing line use."""
    value = "–" if trial.value is None else f"{trial.value:.2f} dB"
    step = "" if trial.state.name != "PRUNED" else f" at iteration {trial.last_step}"
    return (f"trial {trial.number} ({trial.number + 1} of {trials}) {trial.state.name.lower()}, "
            f"{value}{step}, {trial.params}")
