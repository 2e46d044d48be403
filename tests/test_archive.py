"""``gib archive``: a run folder's records alone, consistent, in one file that the reading commands accept."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gan_inversion_bench import archive, tables
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.store import ResultStore, StoreError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = RunConfig(generator="pggan-tiny", methods=["single-code", "mganprior"], images="generated", n_generated=3,
                       budget=3, device="cpu", batch_size=3, latency=False)
    return run(config, tmp_path_factory.mktemp("source") / "run", progress=False, echo=lambda s: None)


def gib(*args: str):
    return CliRunner().invoke(main, list(args))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["method_key", "image_id"]).reset_index(drop=True)


def test_the_archive_holds_every_record_and_reads_like_the_run_folder(run_dir, tmp_path):
    r = gib("archive", str(run_dir), str(tmp_path / "arch"))
    assert r.exit_code == 0, r.output
    assert "6 records of 2 configuration(s)" in r.output
    pd.testing.assert_frame_equal(_sorted(tables.load_records(tmp_path / "arch")),
                                  _sorted(tables.load_records(run_dir)))
    r = gib("compare", str(tmp_path / "arch"), "mganprior", "mganprior", "--b-run", str(run_dir), "--metric", "psnr")
    assert r.exit_code == 0, r.output
    row = r"\| generated \| PSNR \(dB\) +\| 3 +\| \+0\.00 +\| \[\+0\.00, \+0\.00\] +\| 0 / 3 / 0 "
    assert re.search(row, r.output), r.output
    assert "3 images in both folders with identical content" in r.output
    assert gib("table", str(tmp_path / "arch"), "--out", str(tmp_path / "t")).exit_code == 0
    # one file, a rollback journal, and reading it leaves no side files behind
    assert sorted(os.listdir(tmp_path / "arch")) == ["results.sqlite"]
    with sqlite3.connect(tmp_path / "arch" / "results.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with ResultStore(tmp_path / "arch", create=False) as store:
        info = store.get_meta("archive")
        assert store.get_meta("content") == ResultStore(run_dir, create=False).get_meta("content")
    assert info["from"] == str(run_dir) and info["records"] == 6 and "reconstructions" in info["left_out"]


def test_rows_still_in_the_wal_are_archived_where_a_file_copy_loses_them(run_dir, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    with ResultStore(live) as writer:  # a run still writing: its newest row only in the -wal
        writer.conn.execute("PRAGMA wal_autocheckpoint=0")
        row = next(r for r in writer.results() if r["method"] == "mganprior")
        writer.add_results([{**row, "image_id": "generated/099"}])
        assert (live / "results.sqlite-wal").stat().st_size > 0
        archive.archive_run(live, tmp_path / "arch")
        (tmp_path / "copy").mkdir()
        shutil.copy(live / "results.sqlite", tmp_path / "copy" / "results.sqlite")
    ids = set(tables.load_records(tmp_path / "arch")["image_id"])
    assert "generated/099" in ids and len(ids) == 4
    assert "generated/099" not in set(tables.load_records(tmp_path / "copy")["image_id"])


@pytest.mark.parametrize("planted", ["results.sqlite", "results.sqlite-wal", "link"])
def test_an_existing_archive_or_a_planted_link_is_refused_and_left_alone(run_dir, tmp_path, planted):
    dest = tmp_path / "arch"
    dest.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    if planted == "link":
        (dest / "results.sqlite").symlink_to(outside)
    else:
        (dest / planted).write_text("keep me")
    r = gib("archive", str(run_dir), str(dest))
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert "already exists" in r.output and "results.sqlite" in r.output
    assert outside.read_text() == "keep me"
    assert all(p.read_text() == "keep me" for p in dest.iterdir())


def test_a_folder_that_is_not_a_run_folder_or_the_run_folder_itself_is_refused(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    r = gib("archive", str(tmp_path / "empty"), str(tmp_path / "arch"))
    assert r.exit_code != 0 and "is not a run folder: results.sqlite not found" in r.output, r.output
    assert not (tmp_path / "arch" / "results.sqlite").exists()
    r = gib("archive", str(run_dir), str(run_dir))
    assert r.exit_code != 0 and "is the run folder itself" in r.output, r.output
    with pytest.raises(StoreError, match="not a usable results database"):
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "results.sqlite").write_bytes(b"not a database at all" * 100)
        archive.archive_run(bad, tmp_path / "arch2")


def test_a_failure_half_way_leaves_no_file_in_dest(run_dir, tmp_path, monkeypatch):
    def broken(out, src):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(archive, "_finish", broken)
    with pytest.raises(sqlite3.OperationalError):
        archive.archive_run(run_dir, tmp_path / "arch")
    assert os.listdir(tmp_path / "arch") == []


def test_a_destination_that_cannot_be_written_gets_one_clear_line(run_dir, tmp_path):
    (tmp_path / "file").write_text("a file where DEST's parent folder should be")
    r = gib("archive", str(run_dir), str(tmp_path / "file" / "arch"))
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert f"cannot write the archive into {tmp_path / 'file' / 'arch'}: " in r.output
