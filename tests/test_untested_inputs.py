"""Handled cases that had no test of their own (docs/reliability.md): a `--set` key no method has,
CPU allocation failures, codes beyond the machine's memory, a CUDA index beyond the GPUs present,
`~` in paths, special files in an image folder, `gib report` into a file, progress output, and the
temporary folders a killed `gib report` leaves in a run folder.
"""
from __future__ import annotations

import errno
import glob
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import harness
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, RunError, resolve_device, run
from gan_inversion_bench.harness.progress import Lines, progress_for
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.report import MARKER, remove_stale_temporaries, write_report
from gan_inversion_bench.store import ResultStore

TINY = ["-g", "pggan-tiny", "-m", "single-code", "--iterations", "1", "--device", "cpu", "--no-progress",
        "--no-latency"]


def gib(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rows(run_dir: Path) -> list[dict]:
    with ResultStore(run_dir, create=False) as s:
        return s.results()


def quiet(cfg: RunConfig, out: Path) -> Path:
    return run(cfg, out, progress=False, echo=lambda s: None)


def tiny_config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2, budget=1,
                device="cpu", batch_size=2, latency=False)
    base.update(kw)
    return RunConfig(**base)


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((24, 24, 3)) * 255).astype(np.uint8)).save(path)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): path → (kind, size, mtime, link target); not
    the ``-wal`` and ``-shm`` files SQLite keeps next to a database while it is open."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.endswith(("-wal", "-shm")):
                continue
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns,
                           os.readlink(p) if p.is_symlink() else None)
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return quiet(tiny_config(), tmp_path_factory.mktemp("template") / "run")


@pytest.fixture
def run_dir(template, tmp_path) -> Path:
    import shutil

    shutil.copytree(template, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


# ---- (a) a --set key without method prefix that no method of the run has -------------------------------
def test_an_unprefixed_setting_no_method_has_is_refused_with_a_suggestion(tmp_path):
    out = tmp_path / "new"
    r = CliRunner().invoke(main, ["run", *TINY, "--images", "generated", "--n", "1", "--set", "lrr=0.1",
                                  "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Error: setting 'lrr' is not a setting of any method in this run (single-code). Did you mean 'lr'? " \
           "Valid settings: " in r.output, r.output
    assert not out.exists(), "a refused command left its output folder behind"


# ---- (b) a CPU allocation failure is out of memory ----------------------------------------------------
CPU_ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("error", [MemoryError(), MemoryError("x"), RuntimeError(CPU_ALLOCATOR),
                                   RuntimeError("CUDA error: out of memory")], ids=repr)
def test_cpu_allocation_failures_are_out_of_memory(error):
    assert harness.is_out_of_memory(error)


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), RuntimeError("memory format not supported"),
                                   ValueError("can't allocate memory"), OSError(errno.ENOMEM, "no memory"),
                                   RunError("cannot write: out of memory"), KeyError("memory")], ids=repr)
def test_other_errors_are_not_out_of_memory(error):
    assert not harness.is_out_of_memory(error)


def test_a_real_cpu_allocation_failure_is_out_of_memory():
    """The message PyTorch's CPU allocator really gives (16 PiB cannot be had, even with overcommit)."""
    try:
        torch.empty(2**54, dtype=torch.uint8)
    except (RuntimeError, MemoryError) as e:
        assert harness.is_out_of_memory(e), repr(e)
    else:  # pragma: no cover - a machine that lends 16 PiB
        pytest.skip("the allocation succeeded")


@pytest.mark.parametrize("error", [lambda: MemoryError(), lambda: RuntimeError(CPU_ALLOCATOR)],
                         ids=["MemoryError", "DefaultCPUAllocator"])
def test_a_cpu_allocation_failure_in_a_method_halves_the_batch(tmp_path, monkeypatch, error):
    real, sizes = SingleCode.invert, []

    def invert(self, generator, targets, **kw):
        if self.budget > 2:  # not the harness's FLOP count (budgets 1 and 2) nor its warm-up
            sizes.append(targets.shape[0])
            if targets.shape[0] > 1:
                raise error()
        return real(self, generator, targets, **kw)

    monkeypatch.setattr(SingleCode, "invert", invert)
    messages: list[str] = []
    out = run(tiny_config(budget=3), tmp_path / "r", progress=False, echo=messages.append)
    assert sizes == [2, 1, 1]
    assert [(r["status"], r["batch_size"]) for r in rows(out)] == [("ok", 1), ("ok", 1)]
    assert any("out of memory with a batch of 2 images; retrying with 1" in m for m in messages), messages


# ---- (c) codes whose memory exceeds the machine -------------------------------------------------------
def test_a_code_count_beyond_the_machine_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    pytest.importorskip("gan_inversion_bench.methods.mganprior")
    from gan_inversion_bench.methods.mganprior import MGANPrior

    def never(*a, **kw):
        raise AssertionError("mganprior.invert ran: the codes were allocated")

    monkeypatch.setattr(MGANPrior, "invert", never)
    out = tmp_path / "huge"
    r = CliRunner().invoke(main, ["run", "-g", "pggan-tiny", "-m", "mganprior", "--images", "generated", "--n", "1",
                                  "--iterations", "2", "--device", "cpu", "--no-progress", "--no-latency",
                                  "--set", "mganprior.n_codes=100000000", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Error: mganprior: 1 image(s) at budget 2 with 100000000 code(s) each need at least " in r.output
    assert " GiB are free on cpu. Lower the budget (--iterations), the codes or the batch size" in r.output
    assert not out.exists()


# ---- (d) cuda:7 on a machine with one CUDA device -----------------------------------------------------
@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_cuda_index_beyond_the_one_gpu_names_how_many_there_are(one_gpu):
    with pytest.raises(RunError) as e:
        resolve_device("cuda:7")
    assert str(e.value) == ("device 'cuda:7': this machine has 1 CUDA device(s) (cuda:0 … cuda:0); "
                            "offered: cpu, auto, cuda, cuda:0")
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cuda") == torch.device("cuda")


def test_gib_run_on_cuda_7_with_one_gpu_is_refused_before_any_work(one_gpu, tmp_path):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "1",
                                  "--iterations", "1", "--device", "cuda:7", "--no-progress", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Error: device 'cuda:7': this machine has 1 CUDA device(s) (cuda:0 … cuda:0)" in r.output, r.output
    assert not out.exists()


# ---- (e) ~ in paths -----------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """HOME is a fresh folder; the current directory another one, where no literal '~' may appear."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    write_png(home / "imgs" / "a.png")
    yield home
    assert not (cwd / "~").exists(), "a literal '~' folder was created in the current directory"


def test_tilde_in_out_and_images_options(home):
    r = gib("run", *TINY, "--images", "folder:~/imgs", "--out", "~/x")
    assert r.exit_code == 0, r.output
    assert [x["image_id"] for x in rows(home / "x")] == ["folder/a.png"]


def test_tilde_in_a_config_file(home, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"images": "folder:~/imgs", "out": "~/y", "weights": "~/missing.pth"}))
    r = CliRunner().invoke(main, ["run", "--config", str(cfg), "-g", "pggan", "-m", "single-code",
                                  "--iterations", "1", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 1 and f"checkpoint {home / 'missing.pth'} does not exist" in r.output, r.output
    cfg.write_text(json.dumps({"images": "folder:~/imgs", "out": "~/y"}))
    r = gib("run", "--config", cfg, *TINY)
    assert r.exit_code == 0, r.output
    assert [x["image_id"] for x in rows(home / "y")] == ["folder/a.png"]


def test_tilde_in_weights_option(home):
    r = CliRunner().invoke(main, ["run", "-g", "pggan", "--weights", "~/missing.pth", "-m", "single-code",
                                  "--images", "generated", "--n", "1", "--device", "cpu", "--out", "~/w"])
    assert r.exit_code == 1 and f"checkpoint {home / 'missing.pth'} does not exist" in r.output, r.output


def test_tilde_in_gib_cache(home, monkeypatch):
    from gan_inversion_bench.zoo import resolve_cache_dir

    monkeypatch.setenv("GIB_CACHE", "~/cache")
    assert resolve_cache_dir() == home / "cache"
    r = gib("list", "checkpoints")
    assert r.exit_code == 0 and f"cache: {home / 'cache'}" in r.output, r.output


def test_tilde_in_gib_cache_for_pmsfc(home, monkeypatch):
    """PmSFC caches its stage 1 in $GIB_CACHE when it is given no cache_dir (the harness gives RUN/cache)."""
    from gan_inversion_bench.methods.pmsfc import PmSFC
    from gan_inversion_bench.registry import GENERATORS

    monkeypatch.setenv("GIB_CACHE", "~/cache")
    m = PmSFC(discovery_iterations=2, codes_per_subspace=2, iterations=1)
    m.prepare(GENERATORS.create("pggan-tiny"), seed=0)
    assert list((home / "cache").glob("pmsfc-*")), "nothing was cached under ~/cache"


def test_tilde_in_gib_profiles(home, monkeypatch):
    from gan_inversion_bench.profiles import profile_dir, tuned_settings, write_entry

    monkeypatch.setenv("GIB_PROFILES", "~/profiles")
    assert profile_dir() == home / "profiles"
    write_entry(home / "profiles" / "pggan-tiny.json", "pggan-tiny", "single-code",
                {"base_profile": "quick", "settings": {"lr": 0.05}})
    assert tuned_settings("pggan-tiny", "single-code") == ("quick", {"lr": 0.05})
    r = gib("run", *TINY, "--images", "generated", "--n", "1", "--out", "~/z")
    assert r.exit_code == 0 and "profile: tuned" in r.output, r.output


# ---- (f) special files in an image folder -------------------------------------------------------------
class FifoWatch:
    """Notices when anyone opens the FIFO ``path`` for reading (a blocked reader is released with EOF,
    so a broken toolkit fails the test instead of hanging it)."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self.opened, self._stop = path, False, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader; ENOENT: removed
                continue
            self.opened = True
            os.close(fd)

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join()
        return self.opened


def test_fifo_socket_and_device_files_are_skipped_and_the_run_goes_on(tmp_path):
    images = tmp_path / "images"
    write_png(images / "good.png")
    fifo = FifoWatch(images / "fifo.png")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(images / "socket.png"))
    special = ["fifo.png", "socket.png"]
    try:
        os.mknod(images / "null.png", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
        special.append("null.png")
    except (PermissionError, OSError):  # no CAP_MKNOD here: the device node case is not exercised
        pass
    try:
        r = gib("run", *TINY, "--images", f"folder:{images}", "--out", tmp_path / "r")
    finally:
        sock.close()
        assert not fifo.stop(), "the FIFO was opened (a reader would block the run)"
    assert r.exit_code == 0, r.output
    for name in special:
        assert f"skipped {images / name}: not a regular file (a directory or special file); expected an image file" \
            in r.output, r.output
    assert [x["image_id"] for x in rows(tmp_path / "r")] == ["folder/good.png"]


def test_a_symlink_to_a_device_is_skipped_as_not_a_regular_file(tmp_path):
    """A link in the image folder (the user's input, not a run folder) is followed to see what it is:
    one to /dev/null is no regular file, so it is skipped, and the message says what it is."""
    images = tmp_path / "images"
    write_png(images / "good.png")
    (images / "null.png").symlink_to("/dev/null")
    r = gib("run", *TINY, "--images", f"folder:{images}", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert (f"skipped {images / 'null.png'}: not a regular file (a symbolic link to a directory or special file)"
            in r.output), r.output
    assert [x["image_id"] for x in rows(tmp_path / "r")] == ["folder/good.png"]


def test_a_generator_device_option_is_refused_for_the_run_device(tmp_path):
    """--gen-opt device=… would build the generator elsewhere than the run's device (a traceback for a
    device the machine lacks; found by the property test): refused, pointing at --device."""
    for device in ("cuda", "meta", "cpu"):
        r = gib("run", *TINY, "--gen-opt", f"device={device}", "--out", tmp_path / device)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert f"generator option device ('{device}'): the run's device is set with --device" in r.output
        assert not (tmp_path / device).exists()


# ---- (g) gib report into a file -----------------------------------------------------------------------
def test_report_out_an_existing_file_is_refused(run_dir, tmp_path):
    target = tmp_path / "a-file"
    target.write_bytes(b"keep me")
    before = snapshot(run_dir)
    r = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(target)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"Error: Invalid value for '--out': Directory '{target}' is a file." in r.output, r.output
    assert target.read_bytes() == b"keep me" and snapshot(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "run"]


def test_report_when_the_report_entry_is_a_file(run_dir):
    (run_dir / "report").write_bytes(b"a file named report")
    before = snapshot(run_dir)
    r = CliRunner().invoke(main, ["report", str(run_dir)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"Error: {run_dir / 'report'}: refused: not a folder; use --out DIR to write the report elsewhere" \
        in r.output, r.output
    assert snapshot(run_dir) == before and (run_dir / "report").read_bytes() == b"a file named report"


# ---- (h) progress output that fits where it goes ------------------------------------------------------
def test_progress_on_a_file_or_pipe_is_plain_periodic_lines():
    stream = io.StringIO()
    bar = progress_for("m: preparing", True, stream)
    assert isinstance(bar, Lines)
    bar.min_interval = 0.0  # every 10 %
    for i in range(1, 101):
        bar.update(i, 100)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [ln.rpartition(" (")[0] for ln in lines] == [f"m: preparing: {i}/100" for i in (1, *range(10, 101, 10))]
    assert all(ln.endswith(" s)") for ln in lines)


def test_plain_progress_lines_are_rate_limited_but_the_last_is_always_written():
    stream = io.StringIO()
    bar = progress_for("x", True, stream)
    for i in range(1, 501):
        bar.update(i, 500)
    assert [ln.rpartition(" (")[0] for ln in stream.getvalue().splitlines()] == ["x: 1/500", "x: 500/500"]


def test_progress_on_a_terminal_is_a_bar():
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty has 0 columns
    with os.fdopen(slave, "w") as stream:
        assert stream.isatty()
        bar = progress_for("m: preparing", True, stream)
        assert bar is not None and not isinstance(bar, Lines)
        for i in range(1, 6):
            time.sleep(0.12)  # tqdm redraws at most every 0.1 s
            bar.update(i, 5)
        bar.close()
        stream.flush()
        os.set_blocking(master, False)
        text = os.read(master, 65536).decode(errors="replace")
    os.close(master)
    assert "\r" in text and "m: preparing:" in text and "/5 [" in text, repr(text)
    assert progress_for("m", False, io.StringIO()) is None


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


PMSFC_FAST = {"discovery_iterations": 20, "codes_per_subspace": 2, "iterations": 2}


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "terminal"])
def test_pmsfc_preparation_reports_progress(tmp_path, monkeypatch, terminal):
    """Subspace discovery (PmSFC's prepare) reports through the same helper: lines in a log, a bar on a terminal."""
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    run(tiny_config(methods=["pmsfc"], n_generated=1, batch_size=1, overrides={"pmsfc": PMSFC_FAST}),
        tmp_path / "r", progress=True, echo=lambda s: None)
    text = stderr.getvalue()
    if terminal:
        assert "\r" in text and "pmsfc: preparing:" in text and "/20 [" in text, repr(text[-2000:])
    else:
        assert "\r" not in text, repr(text[-2000:])
        assert "pmsfc: preparing: 1/20 (" in text and "pmsfc: preparing: 20/20 (" in text, text


# ---- 2. the temporary folder of a killed `gib report` -----------------------------------------------------
def plant_stale(run_dir: Path, name: str = ".report-k1ll3d00.tmp") -> Path:
    """What a report killed while it copied images leaves: the marker, a half-filled images folder."""
    stale = run_dir / name
    (stale / "images").mkdir(parents=True)
    (stale / MARKER).write_text("written by gib report\n")
    (stale / "images" / "half.png").write_bytes(b"\x89PNG half")
    return stale


def test_a_stale_report_folder_is_removed_by_the_next_report(run_dir):
    stale, empty = plant_stale(run_dir), run_dir / ".report-0000000_.tmp"
    empty.mkdir()  # killed between mkdtemp and the marker
    r = gib("report", run_dir)
    assert r.exit_code == 0, r.output
    assert f"removed 2 temporary folder(s) left in {run_dir} by an earlier report that was killed" in r.output
    assert not stale.exists() and not empty.exists() and (run_dir / "report" / "index.html").is_file()
    assert not glob.glob(str(run_dir / ".report-*.tmp"))


def test_report_clean_up_never_follows_a_link_nor_deletes_what_is_not_a_report(run_dir, tmp_path):
    outside = tmp_path / "outside"
    (outside / "images").mkdir(parents=True)
    (outside / MARKER).write_text("looks like a report\n")
    (outside / "images" / "victim.png").write_bytes(b"victim")
    (outside / "data.txt").write_text("keep")
    before = snapshot(outside)
    for name in (".report-evil.tmp", ".report-evil0000.tmp"):  # the second has a mkdtemp-like name
        (run_dir / name).symlink_to(outside, target_is_directory=True)
    foreign = run_dir / ".report-notmine0.tmp"  # a real folder that does not hold a report
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone's notes")
    nested = run_dir / "recon" / ".report-nested00.tmp"  # not directly in the run folder
    nested.mkdir()
    (nested / MARKER).write_text("x")
    assert gib("report", run_dir).exit_code == 0
    assert snapshot(outside) == before
    for name in (".report-evil.tmp", ".report-evil0000.tmp"):
        assert (run_dir / name).is_symlink() and os.readlink(run_dir / name) == str(outside)
    assert (foreign / "notes.txt").read_text() == "someone's notes" and (nested / MARKER).is_file()


def test_a_report_being_written_keeps_its_temporary_folder(run_dir):
    """The folder of a live report is locked; another report's clean-up leaves it alone."""
    from gan_inversion_bench.safe_paths import lock_folder

    live = plant_stale(run_dir, ".report-l1ve0000.tmp")
    fd = lock_folder(live)
    try:
        assert remove_stale_temporaries(run_dir / "report") == 0 and live.is_dir()
        write_report(run_dir)
        assert live.is_dir()
    finally:
        os.close(fd)
    assert remove_stale_temporaries(run_dir / "report") == 1 and not live.exists()


def test_without_flock_the_report_is_written_and_nothing_is_deleted(run_dir, monkeypatch):
    """A file system without flock (ENOLCK, some network ones): a folder whose lock cannot be checked
    might be a live report's, so it stays; the report itself is still written."""
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    stale = plant_stale(run_dir)
    assert gib("report", run_dir).exit_code == 0 and (run_dir / "report" / "index.html").is_file()
    assert stale.is_dir()


def test_report_out_dir_cleans_only_its_own_temporary_folders(run_dir, tmp_path):
    stale_out = tmp_path / ".elsewhere-abcd1234.tmp"
    stale_out.mkdir()
    (stale_out / MARKER).write_text("x")
    stale_run = plant_stale(run_dir)
    assert gib("report", run_dir, "--out", tmp_path / "elsewhere").exit_code == 0
    assert not stale_out.exists() and stale_run.is_dir()  # --out does not write into the run folder


def test_a_report_killed_by_sigkill_leaves_a_folder_the_next_report_removes(run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "gan_inversion_bench", "report", str(run_dir)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, seen = time.monotonic() + 120, []
    while not seen and p.poll() is None and time.monotonic() < deadline:
        seen = glob.glob(str(run_dir / ".report-*.tmp"))
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert seen, f"the report ended before its temporary folder was seen: {p.stderr.read().decode()[-2000:]}"
    stale = glob.glob(str(run_dir / ".report-*.tmp"))
    assert stale and not (run_dir / "report").exists()
    r = gib("report", run_dir)
    assert r.exit_code == 0 and "removed 1 temporary folder(s)" in r.output, r.output
    assert not glob.glob(str(run_dir / ".report-*.tmp")) and (run_dir / "report" / "index.html").is_file()


# ---- found by the property test: a hard-linked -shm is written by every reader ----------------------------
@pytest.mark.parametrize("command", [["table"], ["report"], ["report", "--out", "OUT"]])
def test_a_hard_linked_shm_file_is_refused_even_for_reading(run_dir, tmp_path, command):
    """SQLite writes its wal-index into ``results.sqlite-shm`` whenever it opens a WAL database, read-only
    too: `gib table` overwrote a file outside the run folder hard-linked there (13 bytes became 32768)."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    mtime = victim.stat().st_mtime_ns
    (run_dir / "results.sqlite-shm").unlink(missing_ok=True)
    os.link(victim, run_dir / "results.sqlite-shm")
    args = ["report" if c == "report" else str(tmp_path / "out") if c == "OUT" else c for c in command]
    r = CliRunner().invoke(main, [args[0], str(run_dir), *args[1:]])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"Error: {run_dir / 'results.sqlite-shm'}: refused: a hard link (2 names): SQLite writes its " \
           "shared-memory index into this file whenever the database is opened" in r.output, r.output
    assert victim.read_bytes() == b"do not touch" and victim.stat().st_mtime_ns == mtime
    assert not (tmp_path / "out").exists() and not (run_dir / "report").exists()
