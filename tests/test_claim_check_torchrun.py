"""claim_check.py under torchrun: one configuration's images shared over two CPU processes give the records
one process gives, rank 0 alone logs the session, and a split scan that is not done yet is refused (every
rank would train the same S into one cache)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_scripts import launch_env, load

SCRIPT = str(Path(__file__).resolve().parents[1] / "benchmarks" / "claim_check.py")
TINY = ["--scan-splits", "2", "--iterations", "3", "--n-generated", "3", "--images", "generated", "--restarts", "1",
        "--discovery-iterations", "10", "--batch-size", "1", "--device", "cpu"]


def _torchrun(out: Path, only: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run([*launcher, SCRIPT, "--out", str(out), *TINY, "--only", only],
                          capture_output=True, text=True, timeout=240, env=launch_env())


def _one_process(out: Path, only: str) -> int:
    """The script in this process, on one torch thread as each launched rank runs (the same arithmetic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load("claim_check").main(["--out", str(out), *TINY, "--only", only])
    finally:
        torch.set_num_threads(threads)


def _psnr(folder: Path) -> dict[str, float]:
    with sqlite3.connect(folder / "results.sqlite") as conn:
        return dict(conn.execute("SELECT image_id, psnr FROM results"))


def test_a_rank_refuses_a_split_not_scanned_yet(tmp_path, monkeypatch):
    """What every rank of a torchrun launch sees (its environment) before any process group: the refusal."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit, match=r"not scanned yet.*--only b/scan"):
        _one_process(tmp_path, "b/R1-K30")
    assert not (tmp_path / "b" / "R1-K30").exists()


def test_two_processes_give_one_process_records_and_one_session_line(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _one_process(one, "b/scan,b/R1-K30") == 0
    assert _one_process(two, "b/scan") == 0
    shared = _torchrun(two, "b/R1-K30")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert "2 processes" in shared.stdout
    expected = _psnr(one / "b" / "R1-K30")
    assert len(expected) == 3 and _psnr(two / "b" / "R1-K30") == pytest.approx(expected, abs=1e-9)
    log = json.loads((two / "runs.json").read_text())
    assert [e["new_records"] for e in log["b/R1-K30"]] == [3]  # rank 1 kept no books
    assert [e["new_records"] for e in log["b/scan-2"]] == [1]
