"""Multi-process runs: torchrun with 2 CPU processes (gloo) shards the images, rank 0 stores every
record exactly once, and a second run resumes without recomputing anything."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bench_scripts import launch_env
from click.testing import CliRunner

from gan_inversion_bench import cli, distributed, harness
from gan_inversion_bench.distributed import DistInfo


def torchrun_popen(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = launch_env(**(extra_env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gan_inversion_bench", "run", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # its own process group: a failed test kills the ranks too


def torchrun(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    p = torchrun_popen(args)
    out, _ = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, "")


def test_torchrun_two_cpu_processes_store_each_image_once_and_resume(tmp_path):
    out = tmp_path / "run"
    # --n-images, not --n: torchrun's own parser would take --n for one of its options
    args = ["-g", "pggan-tiny", "--images", "generated", "--n-images", "4", "--iterations", "2",
            "--method", "single-code", "--device", "cpu", "--out", str(out), "--no-progress"]
    first = torchrun(args)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-4000:]
    assert "single-code: 0 done, 4 to invert" in log and "2 processes" in log
    assert log.count("| single-code") == 1, "only rank 0 prints the table"
    with sqlite3.connect(out / "results.sqlite") as c:
        rows = c.execute("SELECT image_id, status, batch_size, session, created, recon_path FROM results").fetchall()
        sessions = c.execute("SELECT id, status FROM sessions").fetchall()
    ids = sorted(r[0] for r in rows)
    assert ids == [f"generated/{i:03d}" for i in range(4)]  # every image, each exactly once
    assert all(r[1] == "ok" for r in rows)
    assert {r[2] for r in rows} == {2}, "each of the 2 ranks inverted its 2 images in one batch"
    assert {r[3] for r in rows} == {1} and sessions == [(1, "finished")]
    assert all((out / r[5]).is_file() for r in rows)

    second = torchrun(args)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "single-code: 4 done, 0 to invert" in log
    with sqlite3.connect(out / "results.sqlite") as c:
        again = c.execute("SELECT image_id, status, batch_size, session, created, recon_path FROM results").fetchall()
        assert [s for (s,) in c.execute("SELECT status FROM sessions ORDER BY id")] == ["finished", "finished"]
    assert sorted(again) == sorted(rows), "the second run recomputed or re-stored something"


def _frozen_lock_holder(run_dir: Path, p: subprocess.Popen, timeout: float = 120) -> int:
    """The pid in ``run_dir/.lock`` (rank 0) once that process has frozen itself (the hook's SIGSTOP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stdout.read()
        holder = (run_dir / ".lock").read_text() if (run_dir / ".lock").exists() else ""
        if holder.startswith("pid "):
            pid = int(holder.split()[1])
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return pid
        time.sleep(0.05)
    raise AssertionError("rank 0 never reached its stop point")


def test_gib_stop_under_torchrun_stops_every_rank_after_the_round_in_flight(tmp_path):
    """Rank 0 reads the request after storing a round and tells every rank: no rank waits for another."""
    out = tmp_path / "run"
    args = ["-g", "pggan-tiny", "--images", "generated", "--n-images", "6", "--iterations", "2", "--batch-size", "1",
            "--method", "single-code", "--device", "cpu", "--out", str(out), "--no-progress"]
    # rank 0 freezes after committing its own row of the first round (rank 1's row comes next)
    p = torchrun_popen(args, {harness.KILL_ENV: "committed:1", "GIB_TEST_KILL_SIGNAL": "STOP"})
    try:
        rank0 = _frozen_lock_holder(out, p)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    try:
        asked = CliRunner().invoke(cli.main, ["stop", str(out)])
        assert asked.exit_code == 0 and f"asked the run (pid {rank0} on" in asked.output, asked.output
    finally:
        os.kill(rank0, signal.SIGCONT)
    log, _ = p.communicate(timeout=120)
    assert p.returncode != 0, log[-4000:]  # torchrun reports its ranks' status 75
    assert "Stopped on request (STOP) after a stored batch" in log, log[-4000:]
    with sqlite3.connect(out / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2  # the first round, both ranks' rows
        assert c.execute("SELECT status FROM sessions").fetchall() == [("stopped",)]
    assert not (out / "STOP").exists()


def test_shard_is_round_robin_and_complete():
    items = list(range(7))
    shards = [DistInfo(world_size=3, rank=r).shard(items) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for shard in shards for x in shard) == items
    assert DistInfo().shard(items) == items


def test_single_process_collectives_are_identities():
    one = DistInfo()
    assert not one.enabled and one.is_main
    assert one.broadcast({"a": 1}) == {"a": 1}
    assert one.gather(5) == [5]
    one.barrier()


def test_environment_and_devices(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.from_env() == DistInfo() and distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.from_env()
    assert (info.world_size, info.rank, info.local_rank) == (2, 1, 1) and not distributed.is_main_process()
    assert distributed.device_for(info, "cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert distributed.device_for(info, "auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.device_for(info, "cuda")
    with pytest.raises(ValueError, match="auto, cuda or cpu"):
        distributed.device_for(info, "cuda:3")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="invalid torchrun environment"):
        distributed.from_env()
