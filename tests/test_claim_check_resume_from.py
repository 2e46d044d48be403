"""claim_check.py --resume-from RECORDS: a check archived unfinished continues in a new folder (another
machine) from its records, running only what they lack; and what it refuses to take."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from bench_scripts import load

TINY = ["--iterations", "2", "--n-generated", "2", "--images", "generated", "--restarts", "1", "--device", "cpu",
        "--only", "a/single-code"]


def _rows(folder):
    with sqlite3.connect(folder / "a" / "single-code" / "results.sqlite") as conn:
        return dict(conn.execute("SELECT image_id, created FROM results"))


@pytest.fixture()
def unfinished(tmp_path):
    """The archive of a check whose one configuration holds one of its two images."""
    cc, out, records = load("claim_check"), tmp_path / "there", tmp_path / "records"
    assert cc.main(["--out", str(out), *TINY, "--archive", str(records)]) == 0
    with sqlite3.connect(records / "a" / "single-code" / "results.sqlite") as conn:
        conn.execute("DELETE FROM results WHERE image_id = 'generated/001'")
    return records


def test_an_archived_check_continues_elsewhere_with_only_what_it_lacks(tmp_path, unfinished, capsys):
    kept = _rows(unfinished)
    here = tmp_path / "here"
    assert load("claim_check").main(["--out", str(here), *TINY, "--resume-from", str(unfinished)]) == 0
    said = capsys.readouterr().out
    assert "copied a/single-code/results.sqlite, protocol.json, runs.json" in said, said
    after = _rows(here)
    assert sorted(after) == ["generated/000", "generated/001"]
    assert after["generated/000"] == kept["generated/000"]  # the archived row, not run again
    assert (here / "protocol.json").read_text() == (unfinished / "protocol.json").read_text()
    assert load("claim_check").main(["--out", str(here), *TINY, "--resume-from", str(unfinished)]) == 0
    assert "already holds a/single-code/results.sqlite, protocol.json, runs.json (kept)" in capsys.readouterr().out
    assert _rows(here) == after


def test_another_protocol_is_refused(tmp_path, unfinished):
    here = tmp_path / "here"
    here.mkdir()
    (here / "protocol.json").write_text('{"iterations": 5}')
    with pytest.raises(SystemExit, match=r"its protocol .* differs from .*'s .*resume into another --out"):
        load("claim_check").main(["--out", str(here), *TINY, "--resume-from", str(unfinished)])


def test_a_link_inside_the_records_is_refused_not_followed(tmp_path, unfinished):
    elsewhere = tmp_path / "elsewhere.sqlite"
    elsewhere.write_bytes(b"not a record")
    link = unfinished / "a" / "zz-linked" / "results.sqlite"  # after the configuration in the folder's order
    link.parent.mkdir()
    os.symlink(elsewhere, link)
    here = tmp_path / "here"
    with pytest.raises(SystemExit, match=r"zz-linked/results.sqlite: refused: .*is a symlink"):
        load("claim_check").main(["--out", str(here), *TINY, "--resume-from", str(unfinished)])
    assert not (here / "a").exists()  # nothing copied


def test_a_folder_that_is_not_an_archive_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"no protocol\.json there; expected a folder --archive wrote"):
        load("claim_check").main(["--out", str(tmp_path / "here"), *TINY, "--resume-from", str(tmp_path)])



RECORDS = Path(__file__).resolve().parent.parent / "docs" / "records"
UNFINISHED = sorted(p for p in (RECORDS / "unfinished").glob("*") if p.is_dir())


def test_each_unfinished_check_is_described_and_holds_records_a_run_can_continue():
    """docs/records/unfinished/NAME: named in the records' README with its command, an archive's protocol,
    and per configuration one consistent SQLite file of results (what --resume-from copies); with none, the
    README says so."""
    from gan_inversion_bench.store import ResultStore

    readme = (RECORDS / "README.md").read_text()
    assert UNFINISHED or "No check is unfinished now." in readme
    for folder in UNFINISHED:
        assert f"unfinished/{folder.name}" in readme
        assert f"--resume-from docs/records/unfinished/{folder.name}" in readme
        assert json.loads((folder / "protocol.json").read_text())["iterations"] >= 1
        configs = sorted(folder.glob("*/*/results.sqlite"))
        assert configs, folder
        for db in configs:
            with ResultStore(db.parent, create=False) as st:
                assert st.results() and {r["status"] for r in st.results()} == {"ok"}


def test_the_protocol_line_counts_the_results_per_device_when_a_check_ran_on_several():
    import pandas as pd

    cc = load("claim_check")
    assert cc._devices_text(pd.DataFrame({"device": ["CPU (A)"] * 3})) == "device: CPU (A)"
    both = cc._devices_text(pd.DataFrame({"device": ["CPU (B)", "CPU (A)", "CPU (B)"]}))
    assert both == "devices (results per device; a per-image pair can span two): CPU (A) (1); CPU (B) (2)"
