"""``gib stop`` asks a ``gib tune`` search to stop between trials: the trial in flight is journalled, the
search exits with status 75, and the same command resumes it to the study an uninterrupted search gives.
A search holds its journal's lock, so two searches never write one journal."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from gan_inversion_bench import METHODS
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import stop
from gan_inversion_bench.profiles import read_profile
from gan_inversion_bench.safe_paths import UnsafePathError
from gan_inversion_bench.tune_journal import TuneJournal
from gan_inversion_bench.tuning import TuneConfig, tune

TC = TuneConfig(trials=8, budget=8, n_images=2, min_resource=2)


class AskToStop:
    """Counts ``method``'s inversions (one per trial here) and, during inversion ``at`` (1-based), asks the
    search holding ``journal`` to stop, as ``gib stop`` from another shell would."""

    def __init__(self, monkeypatch, journal, at: int | None, method: str = "mganprior"):
        self.calls, self.at, self.asked = 0, at, []
        cls = METHODS.get(method)
        original = cls.invert

        def invert(m, *args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                self.asked = stop.request_stop(journal)
            return original(m, *args, **kwargs)

        monkeypatch.setattr(cls, "invert", invert)


def study(entry):
    return [(t["number"], t["state"], t["params"], t["value"], t["last_step"]) for t in entry["trials"]]


def journalled(journal) -> int:
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]


def test_a_search_asked_to_stop_ends_after_its_trial_in_flight_and_resumes_to_the_same_study(G, tmp_path,
                                                                                               monkeypatch):
    journal, lines = tmp_path / "t.journal.sqlite", []
    uninterrupted = tune(G, "mganprior", TC)
    asked = AskToStop(monkeypatch, journal, at=4)
    stopped = pytest.raises(stop.StopRequested, match=r"mganprior: stopped on request after trial 3 \(4 of 8\)")
    with stop.search_lock(journal, echo=lines.append) as place, stopped:
        tune(G, "mganprior", TC, journal=journal)
    assert [(p.path, p.kind) for p, _ in asked.asked] == [(journal, "search")]
    assert asked.calls == 4 and journalled(journal) == 4  # the trial in flight finished and was journalled
    assert stop.is_request(place.request)  # the command line removes it; here the next search does
    counter = AskToStop(monkeypatch, journal, at=None)
    with stop.search_lock(journal, echo=lines.append):
        resumed = tune(G, "mganprior", TC, journal=journal)
    assert lines == [f"removed a stop request ({place.request}) left after its search had ended"]
    assert counter.calls == TC.trials - 4 and resumed["tuning"]["resumed_trials"] == 4
    assert study(resumed) == study(uninterrupted) and resumed["settings"] == uninterrupted["settings"]


ARGS = ["tune", "-g", "pggan-tiny", "--trials", "3", "--budget", "4", "--images", "2", "--device", "cpu"]


def test_gib_tune_stopped_exits_75_and_the_same_command_resumes(tmp_path, monkeypatch):
    out = tmp_path / "p" / "pggan-tiny.json"
    journal = out.with_name("pggan-tiny.journal.sqlite")
    args = [*ARGS, "-m", "mganprior", "--out", str(out)]
    AskToStop(monkeypatch, journal, at=2)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == stop.EXIT_STOPPED == 75, result.output
    assert (f"mganprior: stopped on request after trial 1 (2 of 3); its finished trials are in the journal {journal}. "
            "Run the same command again to resume.") in result.stderr
    assert journalled(journal) == 2 and not out.exists()
    assert not stop.journal_place(journal).request.exists()  # the request was obeyed, not left behind
    status = CliRunner().invoke(main, ["status", str(out.parent)])
    with sqlite3.connect(journal) as db:
        complete = db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    assert status.exit_code == 0 and status.output.splitlines() == [
        f"{journal}: no search running", f"  mganprior: 2 of 3 trials journalled ({complete} complete, "
        f"{2 - complete} pruned)"], status.output
    counter = AskToStop(monkeypatch, journal, at=None)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "resuming, 2 of 3 trials replayed" in result.stderr and "removed a stop request" not in result.stderr
    assert counter.calls == 1 and read_profile(out)["methods"]["mganprior"]["tuning"]["resumed_trials"] == 2


def test_a_request_during_a_methods_last_trial_keeps_its_entry_and_says_how_to_go_on(tmp_path, monkeypatch):
    out = tmp_path / "pggan-tiny.json"
    journal = out.with_name("pggan-tiny.journal.sqlite")
    args = [*ARGS, "-m", "single-code", "-m", "mganprior", "--out", str(out)]
    AskToStop(monkeypatch, journal, at=3, method="single-code")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 75, result.output
    assert (f"Stopped on request (pggan-tiny.journal.sqlite.STOP) after single-code's entry was written. The entries "
            f"of single-code are written to {out}; to go on without searching them again, run the same command with "
            "the methods -m mganprior.") in result.stderr
    assert sorted(read_profile(out)["methods"]) == ["single-code"] and not stop.journal_place(journal).request.exists()
    AskToStop(monkeypatch, journal, at=3)  # the last method's last trial: nothing is left to stop
    result = CliRunner().invoke(main, [*ARGS, "-m", "mganprior", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "a stop request (pggan-tiny.journal.sqlite.STOP) came after the last trial; the search had finished" \
        in result.stderr
    assert sorted(read_profile(out)["methods"]) == ["mganprior", "single-code"]
    assert not stop.journal_place(journal).request.exists()


def held(journal, release: threading.Event) -> threading.Thread:
    """A thread holding ``journal``'s search lock (a live ``gib tune``) until ``release``."""
    def search():
        with stop.search_lock(journal, echo=lambda s: None):
            release.wait(60)

    thread = threading.Thread(target=search)
    thread.start()
    while stop.holder_of(stop.journal_place(journal).lock) is None:
        time.sleep(0.01)
    return thread


def test_gib_stop_asks_a_search_by_its_journal_or_folder_and_a_second_search_is_refused(tmp_path):
    journal, release = tmp_path / "tune" / "x.journal.sqlite", threading.Event()
    code = CliRunner().invoke(main, ["stop", str(journal)])
    assert code.exit_code == 1 and "no such folder or file" in code.output
    (tmp_path / "notes.txt").write_text("not a journal")
    status = CliRunner().invoke(main, ["status", str(tmp_path / "notes.txt")])
    assert status.exit_code == 1 and f"tuning journal {tmp_path / 'notes.txt'}: not a readable journal" \
        in status.output, status.output
    TuneJournal(journal, {"a": 1})  # a journal as a search writes it (SQLite)
    (tmp_path / "tune" / "runs.json").write_text("{}")  # a claim check's file with a lock beside: not a journal
    (tmp_path / "tune" / "runs.json.lock").write_text("")
    result = CliRunner().invoke(main, ["stop", str(journal)])
    assert result.exit_code == 1 and "no gib tune holds this journal" in result.output, result.output
    assert "beside the profile" not in result.output
    (tmp_path / "tune" / "x.json").write_text("{}")  # the profile a search writes: its journal is named
    result = CliRunner().invoke(main, ["stop", str(tmp_path / "tune" / "x.json")])
    assert result.exit_code == 1 and "a search's journal lies beside the profile it writes (--out): " \
        f"{journal}" in result.output, result.output
    thread = held(journal, release)
    try:
        result = CliRunner().invoke(main, [*ARGS, "-m", "mganprior", "--journal", str(journal),
                                           "--out", str(tmp_path / "p.json")])
        assert result.exit_code == 1 and f"tuning journal {journal} is in use by pid " in result.output, result.output
        result = CliRunner().invoke(main, ["stop", str(tmp_path), "--wait", "--timeout", "0.3"])
        assert result.exit_code == 1, result.output
        assert f"{journal}: asked the search (pid " in result.output and "to stop after its trial in flight" \
            in result.output and f"still running after 0.3 s: {journal}" in result.output
        assert "runs.json" not in result.output and stop.is_request(stop.journal_place(journal).request)
        status = CliRunner().invoke(main, ["status", str(journal)]).output.splitlines()
        assert status[0].startswith(f"{journal}: search running (pid ") and status[0].endswith(
            ", asked to stop after its trial in flight") and status[1:] == [
            "  no unfinished search journalled (a finished one leaves its entry)"], status
        threading.Timer(0.3, release.set).start()
        result = CliRunner().invoke(main, ["stop", str(journal), "--wait"])
        assert result.exit_code == 0 and f"{journal}: the search has stopped" in result.output, result.output
    finally:
        release.set()
        thread.join()


def test_a_link_named_like_a_request_is_neither_obeyed_nor_written_through(tmp_path):
    journal, outside = tmp_path / "j.journal.sqlite", tmp_path / "outside.txt"
    outside.write_text("keep")
    TuneJournal(journal, {"a": 1})
    place = stop.journal_place(journal)
    with stop.search_lock(journal, echo=lambda s: None):
        place.request.symlink_to(outside)
        assert not stop.is_request(place.request)
        with pytest.raises(UnsafePathError, match="exists and is not a regular file"):
            stop.request_stop(journal)
    assert outside.read_text() == "keep"
    lines: list[str] = []
    with stop.search_lock(journal, echo=lines.append):  # the next search removes the link, never following it
        assert lines and not place.request.is_symlink() and outside.read_text() == "keep"
