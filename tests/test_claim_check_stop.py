"""claim_check.py and ``gib stop``: the configuration in progress stops after its batch, its session line is
logged as stopped (not counted again from its records), no further configuration starts, and the same
command resumes."""
from __future__ import annotations

import json
import sqlite3

from bench_scripts import load

from gan_inversion_bench.harness import orchestrate

TINY = ["--iterations", "2", "--n-generated", "2", "--images", "generated", "--restarts", "1", "--device", "cpu",
        "--batch-size", "1", "--only", "a/single-code,a/mganprior-N10"]


def test_a_stopped_configuration_keeps_its_line_and_the_check_resumes(tmp_path, monkeypatch, capsys):
    cc, out = load("claim_check"), tmp_path / "check"
    asked = iter([True])  # the request is there when the first batch has been stored
    monkeypatch.setattr(orchestrate, "stop_requested", lambda run_dir: next(asked, False))
    assert cc.main(["--out", str(out), *TINY]) == 75
    said = capsys.readouterr().out
    assert "Stopped on request (STOP) after a stored batch" in said and "The check stopped there." in said
    assert not (out / "a" / "mganprior-N10").exists()  # no further configuration started
    log = json.loads((out / "runs.json").read_text())
    assert [(e["new_records"], e["status"]) for e in log["a/single-code"]] == [(1, "stopped")]
    assert cc.session_log(out)["a/single-code"] == log["a/single-code"]  # not read again from the records
    [row] = cc._runs_rows(cc.Source(out, str(out), cc._folder_protocol(out)), ["a"], "")
    assert row[:2] == ["a/single-code", "1"] and row[-1].endswith("(stopped by `gib stop`)")

    assert cc.main(["--out", str(out), *TINY]) == 0
    with sqlite3.connect(out / "a" / "single-code" / "results.sqlite") as conn:
        assert conn.execute("SELECT status FROM sessions ORDER BY id").fetchall() == [("stopped",), ("finished",)]
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    log = json.loads((out / "runs.json").read_text())
    assert [e["new_records"] for e in log["a/single-code"]] == [1, 1] and "status" not in log["a/single-code"][1]
    assert [e["new_records"] for e in log["a/mganprior-N10"]] == [2]
