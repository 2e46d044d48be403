"""``gib status``: where runs stand (live or not, images stored of the set, the pace of a live session and the
time left at it), read-only; checked against hand-computed paces and a real run folder. The live case (a
run frozen while it holds its folder) is in tests/test_reliability.py's ``gib stop`` test."""
from __future__ import annotations

import datetime
import sqlite3

import pytest
from click.testing import CliRunner

from gan_inversion_bench import cli
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.harness.status import _count_text, _pace


def stamps(*seconds: int) -> list[str]:
    t0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)
    return [(t0 + datetime.timedelta(seconds=s)).isoformat(timespec="seconds") for s in seconds]


def test_the_pace_leaves_out_the_first_batch_and_counts_images_after_it():
    # batches of 2 stored at 0 s (after preparation), 60 s and 120 s: 120 s for the 4 images after the first batch
    assert _pace(stamps(0, 0, 60, 60, 120, 120)) == pytest.approx(30.0)
    assert _pace(stamps(0, 0)) is None and _pace([]) is None  # one batch: no pace yet
    assert _count_text(2, 0, 10, 30.0) == "2 of 10 images stored; 0.5 min per image in this session, about 4 min left"
    assert _count_text(10, 1, 10, 30.0) == "10 of 10 images stored (1 failed)"
    assert _count_text(3, 0, None, None) == "3 images stored"


def test_a_finished_run_and_its_folder_are_reported_without_changing_anything(tmp_path):
    config = RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2,
                       overrides={"*": {"iterations": 2}}, device="cpu", latency=False)
    run(config, tmp_path / "runs" / "a", progress=False, echo=lambda s: None)
    def files():  # SQLite's own side files (-wal, -shm) come and go with any reader, as for `gib table`
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "runs").rglob("*")
                if p.is_file() and not p.name.endswith(("-wal", "-shm"))}

    before = files()
    r = CliRunner().invoke(cli.main, ["status", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert f"{tmp_path / 'runs' / 'a'}: not running; last session finished, started" in r.output
    assert "  single-code: 2 of 2 images stored\n" in r.output
    assert files() == before


def test_a_folder_without_runs_is_refused_by_name(tmp_path):
    r = CliRunner().invoke(cli.main, ["status", str(tmp_path)])
    assert r.exit_code == 1
    assert f"{tmp_path}: no run folder (a .lock or results.sqlite file) and no tune journal (with a <journal>.lock " \
        "beside it) at or up to 3 levels below it" in r.output
    r = CliRunner().invoke(cli.main, ["status", str(tmp_path / "missing")])
    assert r.exit_code == 1 and f"{tmp_path / 'missing'}: no run folder" in r.output, r.output


def test_a_session_that_never_ended_is_not_called_running_when_no_process_holds_the_folder(tmp_path):
    config = RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=1,
                       overrides={"*": {"iterations": 2}}, device="cpu", latency=False)
    run(config, tmp_path / "a", progress=False, echo=lambda s: None)
    with sqlite3.connect(tmp_path / "a" / "results.sqlite") as conn:  # as a kill, or a copy taken mid-run, leaves it
        conn.execute("UPDATE sessions SET status = 'running', finished = NULL")
    out = CliRunner().invoke(cli.main, ["status", str(tmp_path / "a")]).output
    assert "not running; last session never ended (killed, or the folder was copied while it ran)" in out, out
