"""Runs that survive faults: SIGKILL at named points, two processes, NaN/Inf losses, out of memory, Ctrl-C.

The SIGKILLs use the harness's test-only hook ``GIB_TEST_KILL_AT=<event>:<n>`` (see
``harness.fault_point``): the process sends itself SIGKILL the n-th time it passes ``<event>``,
so every kill point is reproducible. To keep this file fast, most kills happen in processes
forked from one long-lived "zygote" interpreter that has imported torch (with a single thread,
so that forking is safe) and warmed up; each forked child runs exactly ``gib run ...`` and dies
by a real SIGKILL. One test also kills and resumes ``python -m gan_inversion_bench run`` itself.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import cli, harness, tables
from gan_inversion_bench.harness import RunConfig, RunError, orchestrate, run, stop
from gan_inversion_bench.harness.stop import EXIT_STOPPED
from gan_inversion_bench.methods import single_code
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.safe_paths import UnsafePathError

RES = 32  # pggan-tiny


def gib_args(n: int = 6) -> list[str]:
    return ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", str(n),
            "--batch-size", "1", "--iterations", "3", "--device", "cpu", "--no-progress"]


RUN_ARGS = gib_args()


# ---- checking a run folder --------------------------------------------------------------------
def check_run_folder(run_dir: Path) -> list[dict]:
    """Every invariant a killed run must keep; returns the result rows."""
    with sqlite3.connect(run_dir / "results.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM results")]
    pairs = [(r["method_key"], r["image_id"]) for r in rows]
    assert len(pairs) == len(set(pairs)), "a (method, image) pair is stored twice"
    for r in rows:
        assert r["status"] in ("ok", "failed") and r["created"] and r["batch_size"] >= 1
        check_png(run_dir / "targets" / f"{r['image_id']}.png")
        if r["status"] == "ok":
            for col in ("psnr", "ssim", "lpips", "mse", "time_s", "loss_history", "method_settings", "versions"):
                assert r[col] is not None, f"half-written row: {col} is NULL in {r['image_id']}"
            check_png(run_dir / r["recon_path"])
        else:
            assert r["reason"]
    return rows


def check_png(path: Path) -> None:
    assert path.is_file(), f"{path} is missing"
    with Image.open(path) as im:
        im.verify()  # checks the chunks and CRCs of the whole file
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size == (RES, RES) and im.mode == "RGB", path


def temp_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("**/*.tmp"))


def session_statuses(run_dir: Path) -> list[str]:
    with sqlite3.connect(run_dir / "results.sqlite") as c:
        return [s for (s,) in c.execute("SELECT status FROM sessions ORDER BY id")]


# ---- the zygote: one warmed-up interpreter that forks a `gib run` child per kill point ----------
ZYGOTE = textwrap.dedent("""
    import json, os, sys, traceback
    proto = os.fdopen(os.dup(1), "w")   # replies go here; everything printed goes to stderr
    os.dup2(2, 1)
    import torch
    torch.set_num_threads(1)            # no OpenMP pool in this process: forking it is safe
    from gan_inversion_bench.cli import main

    def child(argv, env, log):
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.update(env)
            main(argv, prog_name="gib")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)

    for line in sys.stdin:
        req = json.loads(line)
        if req.get("warm"):
            try:
                main(req["argv"], prog_name="gib", standalone_mode=False)
            except BaseException:
                traceback.print_exc()
            rc = 0
        else:
            pid = os.fork()
            if pid == 0:
                child(req["argv"], req["env"], req["log"])
            rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        proto.write(json.dumps({"rc": rc}) + "\\n")
        proto.flush()
""")


class Zygote:
    def __init__(self, log: Path):
        self.log = log
        with open(log, "ab") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, text=True)

    def request(self, **req) -> int:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the zygote died; see {self.log}:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)["rc"]

    def gib(self, argv: list[str], kill_at: str | None) -> int:
        env = {harness.KILL_ENV: kill_at} if kill_at else {}
        return self.request(argv=argv, env=env, log=str(self.log))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# (kill point, rows in the database afterwards, whether a temporary file is left behind)
CHAIN_BATCH_1 = [
    ("session_start:1", 0, False),  # nothing written yet
    ("png_tmp:3", 0, True),         # third target PNG written to its temp name, not renamed
    ("png_renamed:2", 0, False),    # resumed: a target renamed into place
    ("batch_start:1", 0, False),    # between batches (before the first)
    ("inverted:1", 0, False),       # batch inverted, nothing written
    ("png_tmp:1", 0, True),         # reconstruction in its temp file
    ("png_renamed:1", 0, False),    # reconstruction in place, no row yet (an orphan PNG)
    ("db_commit:1", 0, False),      # row inserted, transaction not committed
    ("committed:1", 1, False),
    ("db_commit:2", 2, False),
    ("png_renamed:2", 3, False),
    ("batch_start:2", 4, False),
    (None, 6, False),
]
# the same folder, a second method setting (new method key), batches of 3 images
CHAIN_BATCH_3 = [
    ("png_renamed:2", 6, False),    # two of three PNGs of a batch in place, no rows
    ("db_commit:1", 6, False),      # three rows inserted, not committed: all or nothing
    ("inverted:2", 9, False),       # first batch committed, second inverted
    ("png_tmp:2", 9, True),         # resumed: the second reconstruction of the last batch
    (None, 12, False),
]


def test_sigkill_at_named_points_then_resume(tmp_path):
    zygote = Zygote(tmp_path / "zygote.log")
    try:
        assert zygote.request(warm=True, argv=[*gib_args(1), "--out", str(tmp_path / "warm")]) == 0
        out = tmp_path / "run"
        kills = 0
        for extra, chain in (([], CHAIN_BATCH_1), (["--batch-size", "3", "--iterations", "4"], CHAIN_BATCH_3)):
            for kill_at, n_rows, tmp_left in chain:
                rc = zygote.gib(RUN_ARGS + extra + ["--out", str(out)], kill_at)
                where = f"after kill point {kill_at} (log: {zygote.log})"
                assert rc == (-signal.SIGKILL if kill_at else 0), f"exit {rc} {where}"
                kills += kill_at is not None
                assert len(check_run_folder(out)) == n_rows, where
                assert bool(temp_files(out)) == tmp_left, where
    finally:
        zygote.close()
    assert kills >= 10
    statuses = session_statuses(out)
    assert statuses.count("finished") == 2 and statuses.count("abandoned") == kills
    rows = check_run_folder(out)
    assert sorted(r["batch_size"] for r in rows) == [1] * 6 + [3] * 6
    assert all(r["status"] == "ok" for r in rows)


def gib_subprocess(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gan_inversion_bench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}, **kw)


def test_sigkill_of_python_dash_m_run_then_same_command_resumes(tmp_path):
    args = [*gib_args(3), "--out", str(tmp_path / "run")]
    p = gib_subprocess(args, {harness.KILL_ENV: "png_tmp:5"})  # 3 targets, then the second reconstruction
    out, _ = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, out
    assert len(check_run_folder(tmp_path / "run")) == 1
    assert len(temp_files(tmp_path / "run")) == 1
    p = gib_subprocess(args)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert "1 done, 2 to invert" in out and "removed 1 temporary file" in out
    assert len(check_run_folder(tmp_path / "run")) == 3 and not temp_files(tmp_path / "run")
    assert session_statuses(tmp_path / "run") == ["abandoned", "finished"]


def wait_until_stopped(p: subprocess.Popen, timeout: float = 120) -> None:
    """Wait for a child that froze itself with SIGSTOP (the hook with GIB_TEST_KILL_SIGNAL=STOP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stdout.read()
        state = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached its stop point")


def frozen_run(args: list[str], stop_at: str, **kw) -> subprocess.Popen:
    p = gib_subprocess(args, {harness.KILL_ENV: stop_at, "GIB_TEST_KILL_SIGNAL": "STOP"}, **kw)
    try:
        wait_until_stopped(p)
    except BaseException:
        p.kill()
        raise
    return p


def test_second_process_on_the_same_folder_is_refused(tmp_path):
    args = [*gib_args(3), "--out", str(tmp_path / "run")]
    first = frozen_run(args, "batch_start:2")  # one image done; frozen while holding the lock
    try:
        second = gib_subprocess(args)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 1
        assert f"is in use by pid {first.pid}" in out and "use another --out folder" in out, out
        assert "Traceback" not in out
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert len(check_run_folder(tmp_path / "run")) == 1


def test_ctrl_c_keeps_finished_results_and_says_how_to_resume(tmp_path):
    args = [*gib_args(3), "--out", str(tmp_path / "run")]
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler: the
    # child gets the default disposition back, as a foreground `gib run` has it.
    p = frozen_run(args, "committed:2", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p.send_signal(signal.SIGINT)  # a real SIGINT, handled once the process continues
    p.send_signal(signal.SIGCONT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "Interrupted. Finished results are kept in" in out and "run the same command again to resume" in out
    assert "Traceback" not in out
    assert len(check_run_folder(tmp_path / "run")) == 2
    assert session_statuses(tmp_path / "run") == ["interrupted"]
    messages: list[str] = []
    run(config(n_generated=3, batch_size=1, overrides={"*": {"iterations": 3}}), tmp_path / "run", progress=False,
        echo=messages.append)
    assert "2 done, 1 to invert" in messages[0]
    assert len(check_run_folder(tmp_path / "run")) == 3


# ---- gib stop ---------------------------------------------------------------------------------------
def gib_stop(target: Path, *options: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["stop", str(target), *options])
    return result.exit_code, result.output


def test_gib_stop_ends_the_run_after_the_batch_in_flight_and_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    args = [*gib_args(3), "--out", str(run_dir)]
    p = frozen_run(args, "batch_start:2")  # image 1 stored; frozen as the batch of image 2 starts
    try:
        code, out = gib_stop(tmp_path)  # a folder above the run folder: the live run is found in it
        assert code == 0 and f"{run_dir}: asked the run (pid {p.pid} on" in out, out
        assert (run_dir / "STOP").is_file()
        status = CliRunner().invoke(cli.main, ["status", str(tmp_path)]).output
        assert f"{run_dir}: running (pid {p.pid} on" in status and "asked to stop after its current batch" in status
        assert "last session running" in status and "single-code: 1 of 3 images stored" in status, status
    finally:
        p.send_signal(signal.SIGCONT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == EXIT_STOPPED == 75, out
    assert "Stopped on request (STOP) after a stored batch" in out and "run the same command again to resume" in out
    assert "Traceback" not in out
    assert len(check_run_folder(run_dir)) == 2  # the batch in flight was finished and kept
    assert session_statuses(run_dir) == ["stopped"] and not (run_dir / "STOP").exists()
    status = CliRunner().invoke(cli.main, ["status", str(run_dir)]).output
    assert f"{run_dir}: not running; last session stopped" in status and "1 of 3" not in status
    assert "single-code: 2 of 3 images stored" in status, status
    messages: list[str] = []
    run(config(n_generated=3, batch_size=1, overrides={"*": {"iterations": 3}}), run_dir, progress=False,
        echo=messages.append)
    assert "2 done, 1 to invert" in messages[0]
    assert len(check_run_folder(run_dir)) == 3 and session_statuses(run_dir) == ["stopped", "finished"]


def test_gib_stop_refuses_where_no_run_is_in_progress(tmp_path):
    run(config(n_generated=1), tmp_path / "done", progress=False, echo=lambda s: None)
    code, out = gib_stop(tmp_path / "done")  # its lock file is there, but no process holds it
    assert code == 1 and "nothing is in progress there (run folders with a .lock, tune journals with a " \
        "<journal>.lock: none is held by a live process up to 3 levels down)" in out, out
    assert not (tmp_path / "done" / "STOP").exists()
    (tmp_path / "empty").mkdir()
    code, out = gib_stop(tmp_path / "empty")
    assert code == 1 and "none was found up to 3 levels down" in out, out
    code, out = gib_stop(tmp_path / "missing")
    assert code == 1 and "missing: no such folder or file" in out, out


def test_gib_stop_wait_returns_once_the_run_has_stopped_and_says_when_it_has_not(tmp_path):
    run_dir, release = tmp_path / "run", threading.Event()
    run_dir.mkdir()

    def a_run_holding_the_folder():
        with harness.run_lock(run_dir):
            release.wait(60)

    holder = threading.Thread(target=a_run_holding_the_folder)
    holder.start()
    try:
        while stop.lock_holder(run_dir) is None:
            time.sleep(0.01)
        code, out = gib_stop(run_dir, "--wait", "--timeout", "0.3")
        assert code == 1 and "asked the run (pid" in out and f"still running after 0.3 s: {run_dir}" in out, out
        assert (run_dir / "STOP").is_file()  # the request stays for the run to read
        threading.Timer(0.3, release.set).start()
        code, out = gib_stop(run_dir, "--wait")
        assert code == 0 and f"{run_dir}: the run has stopped" in out, out
    finally:
        release.set()
        holder.join()
    code, out = gib_stop(run_dir, "--timeout", "5")
    assert code == 2 and "--timeout applies to --wait" in out, out


def test_a_request_left_after_its_run_ended_is_removed_by_the_next_run_not_obeyed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "STOP").write_text("")
    messages: list[str] = []
    run(config(n_generated=2, batch_size=1), run_dir, progress=False, echo=messages.append)
    assert any("removed a stop request" in m for m in messages), messages
    assert session_statuses(run_dir) == ["finished"] and len(check_run_folder(run_dir)) == 2
    assert not (run_dir / "STOP").exists()


def test_a_request_after_the_last_batch_is_cleared_and_the_run_finishes(tmp_path, monkeypatch):
    """The latency measurement follows the last batch (one image alone, minutes at a long protocol): a request
    that comes then finds nothing left to stop, and is not left behind for the next run."""
    real = orchestrate.measure_latency

    def asked_while_timing(rc, *args):
        (rc.run_dir / "STOP").write_text("")
        real(rc, *args)

    monkeypatch.setattr(orchestrate, "measure_latency", asked_while_timing)
    messages: list[str] = []
    run(config(n_generated=2, latency=True), tmp_path / "run", progress=False, echo=messages.append)
    assert any("came after the last batch was stored; the run had finished" in m for m in messages), messages
    assert session_statuses(tmp_path / "run") == ["finished"] and not (tmp_path / "run" / "STOP").exists()


def test_a_link_named_stop_is_neither_obeyed_nor_written_through(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside.txt"
    run_dir.mkdir()
    outside.write_text("keep")
    (run_dir / "STOP").symlink_to(outside)
    assert not stop.stop_requested(run_dir)
    with harness.run_lock(run_dir):  # a live run (this process) holds the folder
        with pytest.raises(UnsafePathError, match="exists and is not a regular file"):
            stop.request_stop(run_dir)
        (run_dir / "STOP").unlink()
        assert [(p.path, p.kind) for p, _ in stop.request_stop(run_dir)] == [(run_dir, "run")]
        assert stop.stop_requested(run_dir)
    assert outside.read_text() == "keep"
    assert stop.clear_stop(run_dir) and not stop.clear_stop(run_dir)


# ---- NaN / Inf losses -------------------------------------------------------------------------------
def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=4,
                overrides={"*": {"iterations": 4}}, device="cpu", batch_size=4, latency=False)
    base.update(kw)
    return RunConfig(**base)


def poison_losses(monkeypatch, rule):
    """Wrap the method's real optimisation loop: ``rule(call, iteration, batch)`` → {row: bad value}."""
    real = single_code.optimise
    calls = {"n": 0}

    def optimise(params, per_image_loss, **kw):
        if kw.get("iterations") <= 2:  # the harness's untimed FLOP count (budgets 1 and 2) and warm-up
            return real(params, per_image_loss, **kw)
        calls["n"] += 1
        call, iteration = calls["n"], {"n": 0}

        def loss():
            values = per_image_loss()
            bad = rule(call, iteration["n"], values.shape[0])
            iteration["n"] += 1
            for row, value in bad.items():
                values = torch.where(torch.arange(values.shape[0]) == row, torch.full_like(values, value), values)
            return values

        return real(params, loss, **kw)

    monkeypatch.setattr(single_code, "optimise", optimise)


def test_nan_and_inf_loss_fail_one_image_each_and_the_others_continue(tmp_path, monkeypatch):
    poison_losses(monkeypatch, lambda call, it, b: {**({1: float("nan")} if it >= 2 else {}), 2: float("inf")})
    out = run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    rows = {r["image_id"]: r for r in check_run_folder(out)}
    assert rows["generated/001"]["status"] == "failed"
    assert rows["generated/001"]["reason"] == "non-finite loss (nan) at iteration 2"
    assert rows["generated/002"]["reason"] == "non-finite loss (inf) at iteration 0"
    assert rows["generated/000"]["status"] == rows["generated/003"]["status"] == "ok"
    df = tables.load_records(out)
    s = tables.summary(df)
    assert int(s["failed"].iloc[0]) == 2 and int(s["n"].iloc[0]) == 2
    assert "2 (method, image) results failed" in tables.to_markdown(df)


def test_a_batch_where_every_loss_is_nan_fails_and_the_next_batch_runs(tmp_path, monkeypatch):
    poison_losses(monkeypatch, lambda call, it, b: {i: float("nan") for i in range(b)} if call == 1 else {})
    out = run(config(batch_size=2), tmp_path / "r", progress=False, echo=lambda s: None)
    rows = {r["image_id"]: r for r in check_run_folder(out)}
    for i in ("000", "001"):
        assert rows[f"generated/{i}"]["status"] == "failed"
        assert rows[f"generated/{i}"]["reason"].startswith("every image of the batch failed")
        assert "at iteration 0" in rows[f"generated/{i}"]["reason"]
    assert rows["generated/002"]["status"] == rows["generated/003"]["status"] == "ok"


# ---- out of memory ------------------------------------------------------------------------------------
def oom_above(monkeypatch, limit: int, error=lambda: torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)")):
    real = SingleCode.invert
    sizes: list[int] = []

    def invert(self, generator, targets, **kw):
        if self.budget <= 2:  # the harness's untimed FLOP count (budgets 1 and 2) and warm-up
            return real(self, generator, targets, **kw)
        sizes.append(targets.shape[0])
        if targets.shape[0] > limit:
            raise error()
        return real(self, generator, targets, **kw)

    monkeypatch.setattr(SingleCode, "invert", invert)
    return sizes


def test_out_of_memory_halves_the_batch_and_records_the_size_used(tmp_path, monkeypatch):
    sizes = oom_above(monkeypatch, 3)
    messages: list[str] = []
    out = run(config(n_generated=6, batch_size=6), tmp_path / "r", progress=False, echo=messages.append)
    assert sizes == [6, 3, 3]
    rows = check_run_folder(out)
    assert len(rows) == 6 and all(r["status"] == "ok" and r["batch_size"] == 3 for r in rows)
    assert all("batch size reduced from 6 to 3 after running out of memory" in r["timer"] for r in rows)
    assert any("out of memory with a batch of 6 images; retrying with 3" in m for m in messages)


def test_out_of_memory_as_plain_runtime_error_goes_down_to_one_image(tmp_path, monkeypatch):
    sizes = oom_above(monkeypatch, 1, lambda: RuntimeError("CUDA error: out of memory"))
    out = run(config(n_generated=3, batch_size=3), tmp_path / "r", progress=False, echo=lambda s: None)
    assert sizes == [3, 1, 1, 1]
    assert [r["batch_size"] for r in check_run_folder(out)] == [1, 1, 1]


def test_out_of_memory_with_one_image_stops_cleanly_and_keeps_results(tmp_path, monkeypatch):
    run(config(n_generated=2, batch_size=1), tmp_path / "r", progress=False, echo=lambda s: None)
    before = check_run_folder(tmp_path / "r")
    oom_above(monkeypatch, 0)
    with pytest.raises(RunError, match=r"out of memory even with a batch of one image.*run the same command again"):
        run(config(n_generated=2, batch_size=1, overrides={"*": {"iterations": 5}}), tmp_path / "r",
            progress=False, echo=lambda s: None)
    assert check_run_folder(tmp_path / "r") == before
    assert session_statuses(tmp_path / "r") == ["finished", "failed"]


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory():
    assert not harness.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not harness.is_out_of_memory(RunError("cannot write: out of memory"))
    assert harness.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))


def test_halving_on_a_cuda_device_releases_the_failed_attempt():
    messages: list[str] = []
    try:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    except RuntimeError as e:
        assert harness.smaller_batch(e, 5, "m", torch.device("cuda"), messages.append) == 2
    assert messages == ["m: out of memory with a batch of 5 images; retrying with 2 "
                        "(CUDA out of memory. Tried to allocate 9.00 GiB)"]
