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
from bench_scripts import launch_env

SCRIPT = str(Path(__file__).resolve().parents[1] / "benchmarks" / "claim_check.py")
TINY = ["--scan-splits", "2", "--iterations", "3", "--n-generated", "3", "--images", "generated", "--restarts", "1",
        "--discovery-iterations", "10", "--batch-size", "1", "--device", "cpu"]


def _check(out: Path, only: str, processes: int) -> subprocess.CompletedProcess:
    env = launch_env()
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return subprocess.run([*launcher, SCRIPT, "--out", str(out), *TINY, "--only", only],
                          capture_output=True, text=True, timeout=240, env=env)


def _psnr(folder: Path) -> dict[str, float]:
    with sqlite3.connect(folder / "results.sqlite") as conn:
        return dict(conn.execute("SELECT image_id, psnr FROM results"))


def test_two_processes_give_one_process_records_and_one_session_line(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _check(one, "b/scan,b/R1-K30", 1)
    assert single.returncode == 0, single.stderr[-3000:]

    refused = _check(two, "b/R1-K30", 2)
    assert refused.returncode != 0
    assert "not scanned yet" in refused.stdout + refused.stderr and not (two / "b" / "R1-K30").exists()

    assert _check(two, "b/scan", 1).returncode == 0
    shared = _check(two, "b/R1-K30", 2)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert "2 processes" in shared.stdout
    expected = _psnr(one / "b" / "R1-K30")
    assert len(expected) == 3 and _psnr(two / "b" / "R1-K30") == pytest.approx(expected, abs=1e-9)
    log = json.loads((two / "runs.json").read_text())
    assert [e["new_records"] for e in log["b/R1-K30"]] == [3]  # rank 1 kept no books
    assert [e["new_records"] for e in log["b/scan-2"]] == [1]
