"""An interrupted ``gib tune`` resumes from its journal and ends with exactly the study an
uninterrupted search gives; a journal of another search is never replayed into this one."""
from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from gan_inversion_bench import METHODS
from gan_inversion_bench.cli import main
from gan_inversion_bench.profiles import read_profile
from gan_inversion_bench.tune_journal import JournalMismatch
from gan_inversion_bench.tuning import TuneConfig, tune

TC = TuneConfig(trials=8, budget=8, n_images=2, min_resource=2)


@pytest.fixture(scope="module")
def uninterrupted(G):
    return tune(G, "mganprior", TC)


class Interrupt:
    """Counts the method's inversions and raises KeyboardInterrupt at inversion ``at`` (1-based)."""

    def __init__(self, monkeypatch, at: int | None):
        self.calls, self.at = 0, at
        cls = METHODS.get("mganprior")
        original = cls.invert

        def invert(method, *args, **kwargs):
            self.calls += 1
            if self.at is not None and self.calls == self.at:
                raise KeyboardInterrupt
            return original(method, *args, **kwargs)

        monkeypatch.setattr(cls, "invert", invert)


def study(entry):
    return [(t["number"], t["state"], t["params"], t["value"], t["last_step"], t.get("per_image_psnr"))
            for t in entry["trials"]]


def test_an_interrupted_search_resumes_to_the_uninterrupted_study(G, uninterrupted, tmp_path, monkeypatch):
    journal = tmp_path / "tune.journal.sqlite"
    first = Interrupt(monkeypatch, at=6)
    with pytest.raises(KeyboardInterrupt):
        tune(G, "mganprior", TC, journal=journal)
    with sqlite3.connect(journal) as db:
        states = [r[0] for r in db.execute("SELECT state FROM trials ORDER BY number")]
    assert len(states) == 5 and first.calls == 6
    assert "PRUNED" in states and "COMPLETE" in states  # both kinds of trial are replayed below

    lines: list[str] = []
    again = Interrupt(monkeypatch, at=None)
    resumed = tune(G, "mganprior", TC, journal=journal, on_trial=lines.append)
    assert again.calls == TC.trials - 5  # the five journalled trials were not inverted again
    assert study(resumed) == study(uninterrupted)
    assert resumed["settings"] == uninterrupted["settings"]
    assert resumed["tuning"]["best_value"] == uninterrupted["tuning"]["best_value"]
    assert resumed["tuning"]["resumed_trials"] == 5
    assert resumed["tuning"]["choice"] == uninterrupted["tuning"]["choice"] is not None  # per-image values replayed
    assert lines[0].startswith("mganprior: resuming, 5 of 8 trials replayed from")
    assert sum(line.endswith(", from the journal)") for line in lines) == 5
    assert not journal.exists()  # the finished search left the journal; its entry keeps the trials


def test_a_journal_of_another_search_is_not_replayed(G, uninterrupted, tmp_path, monkeypatch):
    journal = tmp_path / "j.sqlite"
    Interrupt(monkeypatch, at=4)
    with pytest.raises(KeyboardInterrupt):
        tune(G, "mganprior", TuneConfig(**{**TC.__dict__, "seed": 1}), journal=journal)
    counter = Interrupt(monkeypatch, at=None)
    entry = tune(G, "mganprior", TC, journal=journal)
    assert counter.calls == TC.trials and entry["tuning"]["resumed_trials"] == 0
    assert study(entry) == study(uninterrupted)
    assert journal.exists()  # the other search's three trials stay for it to resume


def test_a_tampered_journal_is_refused_with_its_path(G, tmp_path, monkeypatch):
    journal = tmp_path / "j.sqlite"
    Interrupt(monkeypatch, at=3)
    with pytest.raises(KeyboardInterrupt):
        tune(G, "mganprior", TC, journal=journal)
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE trials SET params = '{\"lr\": 0.5}' WHERE number = 1")
    with pytest.raises(JournalMismatch, match=rf"{journal}, trial 1: the sampler drew .* the journal has"):
        tune(G, "mganprior", TC, journal=journal)
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM trials WHERE number = 0")
    with pytest.raises(JournalMismatch, match="trial 0 of this search is missing"):
        tune(G, "mganprior", TC, journal=journal)
    journal.write_bytes(b"not a database, " * 100)
    with pytest.raises(JournalMismatch, match="not a readable journal"):
        tune(G, "mganprior", TC, journal=journal)


def test_gib_tune_resumes_through_the_command_line(tmp_path, monkeypatch):
    """The CLI keeps its journal beside --out, says that it resumes, and names a bad journal."""
    out = tmp_path / "p" / "pggan-tiny.json"
    args = ["tune", "-g", "pggan-tiny", "-m", "mganprior", "--trials", "3", "--budget", "4", "--images", "2",
            "--device", "cpu", "--out", str(out)]
    Interrupt(monkeypatch, at=3)
    result = CliRunner().invoke(main, args)
    journal = out.with_name("pggan-tiny.journal.sqlite")
    assert result.exit_code == 130 and f"Interrupted. Finished trials are kept in {journal}; run the same " \
        "command again to resume." in result.stderr
    assert journal.exists() and not out.exists()
    Interrupt(monkeypatch, at=None)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mganprior: resuming, 2 of 3 trials replayed from" in result.stderr
    assert read_profile(out)["methods"]["mganprior"]["tuning"]["resumed_trials"] == 2 and not journal.exists()
    journal.write_bytes(b"garbage" * 200)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and f"tuning journal {journal}: not a readable journal" in result.output
