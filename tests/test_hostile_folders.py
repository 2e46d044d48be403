"""Run folders and tune journals crafted by someone else: what an audit found and how each is refused.

Each test builds the hostile folder the audit used (a hard-linked ``-shm`` beside a tune journal, a view where the
results table should be, a trigger, a linked ``discover`` folder, a ``$`` in a method name) and checks that the
command refuses it by name, or carries on, without reaching outside the folder and without hanging.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_inversion_bench.cli import main
from gan_inversion_bench.download import DownloadError
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.method_tools import folder_artifacts
from gan_inversion_bench.methods.pmsfc import PmSFC
from gan_inversion_bench.store import ResultStore, StoreError
from gan_inversion_bench.tune_journal import JournalMismatch, journal_summary


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real run folder: single-code, one generated image, one iteration on the tiny PGGAN."""
    config = RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=1, budget=1,
                       device="cpu", latency=False)
    return run(config, tmp_path_factory.mktemp("tiny") / "run", progress=False, echo=lambda s: None)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wal_journal(path: Path) -> None:
    """A tune journal in WAL mode with one journalled trial, its -wal and -shm left beside it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE trials (study TEXT, number INTEGER, state TEXT, params TEXT, value REAL, "
               "intermediate TEXT, user_attrs TEXT, description TEXT, PRIMARY KEY (study, number))")
    db.execute("INSERT INTO trials VALUES ('k', 0, 'COMPLETE', '{}', 30.0, '{}', '{}', ?)",
               ('{"method": "ilo", "protocol": {"trials": 5}}',))
    db.commit()
    db.close()


def test_gib_status_never_writes_through_a_journal_shm_hard_linked_to_a_file_outside(tiny_run, tmp_path):
    """SQLite writes its WAL index into ``-shm`` even to read: a journal's ``-shm`` hard-linked to a file outside
    the folder let ``gib status`` overwrite that file. It is refused, and the run folder beside it still shown."""
    victim = tmp_path / "victim.txt"
    victim.write_text("a file outside the folder\n" * 100)
    before = _sha(victim)
    root = tmp_path / "folder"
    root.mkdir()
    journal = root / "x.journal.sqlite"
    _wal_journal(journal)
    assert journal_summary(journal)[0]["journalled"] == 1  # a sound journal is read
    (root / "x.journal.sqlite.lock").touch()
    shm = root / "x.journal.sqlite-shm"
    shm.unlink(missing_ok=True)
    os.link(victim, shm)
    shutil.copytree(tiny_run, root / "run")
    r = CliRunner().invoke(main, ["status", str(root)])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert f"{journal}: refused: tuning journal {shm}: refused: a hard link (2 names)" in r.output
    assert f"{root / 'run'}: not running" in r.output and "single-code: 1 of 1 images stored" in r.output
    assert _sha(victim) == before
    with pytest.raises(JournalMismatch, match="a hard link"):
        journal_summary(journal)


def test_a_journal_whose_descriptions_are_not_json_objects_is_refused_by_name(tmp_path):
    journal = tmp_path / "x.journal.sqlite"
    _wal_journal(journal)
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE trials SET description = '[1, 2]'")
    with pytest.raises(JournalMismatch, match=r"x\.journal\.sqlite: a study's description is not the JSON object"):
        journal_summary(journal)


def _in_time(fn, seconds: float = 60.0) -> BaseException | None:
    """What ``fn()`` raised (None if nothing), failing the test if it has not returned within ``seconds``."""
    out: list[BaseException | None] = []

    def call() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            out.append(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"still running after {seconds} s (a query over the crafted schema)"
    return out[0]


def test_a_view_under_the_results_name_is_refused_before_any_query(tiny_run, tmp_path):
    """An endless recursive view named ``results`` hung every reading command (gib table, status, report,
    compare, archive) at the first query; the schema is now checked first."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    with sqlite3.connect(folder / ResultStore.FILENAME) as db:
        db.execute("DROP TABLE results")
        db.execute("CREATE VIEW results AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) "
                   "SELECT x AS method_key FROM r")
    error = _in_time(lambda: ResultStore(folder, create=False))
    assert isinstance(error, StoreError) and "its schema holds view 'results'" in str(error)
    for command in (["table", str(folder)], ["status", str(folder)]):
        r = CliRunner().invoke(main, command)
        assert "Traceback" not in r.output and "its schema holds view 'results'" in r.output, r.output


def test_a_trigger_in_a_run_database_is_refused_before_a_resume_writes(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    with sqlite3.connect(folder / ResultStore.FILENAME) as db:
        db.execute("CREATE TRIGGER t AFTER INSERT ON results BEGIN DELETE FROM results; END")
    for create in (True, False):
        with pytest.raises(StoreError, match="its schema holds trigger 't', where this toolkit writes only plain"):
            ResultStore(folder, create=create)
    with ResultStore(tiny_run, create=False) as store:  # the sound folder opens as before
        assert len(store.results()) == 1


def test_a_linked_discover_folder_is_named_not_listed(tmp_path):
    """PmSFC's report figures come from ``RUN/discover``; where that is a link, listing it showed the names of
    files outside the run folder in the report. It is handed to the report as itself, to be refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private-holiday-photo.png").write_bytes(b"png")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "discover").symlink_to(outside)
    found = PmSFC.report_artifacts(run_dir)
    assert [str(a.path) for a in found] == ["discover"]
    assert "private-holiday-photo" not in repr(found)
    (run_dir / "discover").unlink()
    (run_dir / "discover").mkdir()
    (run_dir / "discover" / "S_by_cluster.png").write_bytes(b"png")
    (run_dir / "discover" / "other.png").write_bytes(b"png")
    found = folder_artifacts(run_dir, "discover", {"S_by_cluster.png": "|S| by subspace"})
    assert [(str(a.path), a.caption) for a in found] == [("discover/S_by_cluster.png", "|S| by subspace"),
                                                          ("discover/other.png", "other.png")]
    assert folder_artifacts(run_dir, "absent", {}) == []


def test_a_dollar_in_a_method_name_is_plotted_as_text(tiny_run, tmp_path):
    """matplotlib read ``$\\frac{$`` in a label (a method name from the records) as TeX and the report failed."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    with sqlite3.connect(folder / ResultStore.FILENAME) as db:
        db.execute("UPDATE results SET method = '$\\frac{$'")
    r = CliRunner().invoke(main, ["report", str(folder)])
    assert r.exit_code == 0, r.output
    assert "$\\frac{$" in (folder / "report" / "index.html").read_text()


def test_gib_fetch_reports_a_failed_download_in_one_line(monkeypatch):
    import gan_inversion_bench.zoo as zoo

    def failing(*args, **kwargs):
        raise DownloadError("https://example.org/g.pth: HTTP 404 (Not Found)")

    monkeypatch.setattr(zoo, "fetch_checkpoint", failing)
    r = CliRunner().invoke(main, ["fetch", "pggan-celebahq-1024"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Error: https://example.org/g.pth: HTTP 404 (Not Found)" in r.output
