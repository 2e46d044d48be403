"""Property-based (hypothesis): random settings, option values, generator options, seeds, learning
rates, image counts and small random files thrown at `gib run`, and files and links planted in a
finished run folder before `gib table`, never produce a traceback and never write outside the run
folder."""
from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gan_inversion_bench.cli import main

SETTING_NAMES = ["lr", "optimizer", "init", "mse_weight", "perceptual_weight", "perceptual_size", "n_codes", "split",
                 "divide_by_n", "alpha_lr", "iterations", "execution", "no_such_setting", "LR", "lr.x"]
TEXT_VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "true", "False", "adam", "sgd",
                                         "normal", "zero", "null", "[]", "{}", "1e-3", "10", "99999999999999999999",
                                         "", " ", "~", "../x", "3.5"]),
                        st.text(alphabet="ab01.-_=~/ ", max_size=6))


def _png(rng: np.random.Generator, size: int) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


FILE_KINDS = st.sampled_from(["png"] * 4 + ["truncated", "random", "empty", "text", "symlink-out", "dir"])


def _write_files(folder: Path, kinds: list[str], victim: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(kinds):
        f = folder / f"f{i}.png"
        if kind == "png":
            f.write_bytes(_png(rng, int(rng.integers(1, 40))))
        elif kind == "truncated":
            f.write_bytes(_png(rng, 16)[:30])
        elif kind == "random":
            f.write_bytes(rng.bytes(int(rng.integers(1, 200))))
        elif kind == "empty":
            f.write_bytes(b"")
        elif kind == "text":
            f.with_suffix(".txt").write_text("not an image")
        elif kind == "symlink-out":
            f.symlink_to(victim)
        else:
            (folder / f"d{i}.png").mkdir()


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every file under ``root`` except under ``skip``: path → sha256 (symlinks by their target)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p)] = os.readlink(p)
            else:  # a FIFO planted by the test is never opened
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "not a regular file"
    return out


def _no_traceback(result, args) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.output,
                                                                                  repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, (args, result.output)


OPTIONS = st.fixed_dictionaries({
    "sets": st.lists(st.tuples(st.sampled_from(["", "single-code."]), st.sampled_from(SETTING_NAMES), TEXT_VALUES),
                     max_size=2),
    "n": st.sampled_from(["1", "2"] * 6 + ["0", "-1", "x", "99999999999999999999"]),
    "iterations": st.sampled_from(["1", "2"] * 6 + ["0", "-5", "1e3", "99999999999999999999"]),
    "batch": st.sampled_from(["1", "2"] * 6 + ["0", "abc"]),
    "restarts": st.sampled_from(["1"] * 8 + ["2", "0", "-1"]),
    "device": st.sampled_from(["cpu"] * 10 + ["auto", "mps", "meta", "cuda:3", "xla", "cpu:0", ""]),
    "files": st.lists(FILE_KINDS, min_size=1, max_size=3),
    "seed": st.integers(0, 1000),
})


def _sandbox(tmp_path_factory, name: str) -> tuple[Path, Path]:
    """A fresh folder for one example, with a victim file beside the run folder."""
    root = tmp_path_factory.mktemp(name)
    (root / "victim.txt").write_text("do not touch")
    return root, root / "victim.txt"


def _run_then_table(args: list[str], out: Path) -> None:
    """``gib run`` with ``args``, then ``gib table`` on what it stored: neither ends in a traceback."""
    runner = CliRunner()
    _no_traceback(runner.invoke(main, args), args)
    if (out / "results.sqlite").exists():
        _no_traceback(runner.invoke(main, ["table", str(out)]), ["table", str(out)])


def _assert_nothing_outside_changed(root: Path, out: Path, victim: Path, before: object) -> None:
    assert _snapshot(root, out) == before, "something outside the run folder changed"
    assert victim.read_text() == "do not touch"
    shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(o=OPTIONS)
def test_random_options_and_files_never_crash_or_write_outside(tmp_path_factory, o):
    root, victim = _sandbox(tmp_path_factory, "prop")
    images, out = root / "images", root / "run"
    _write_files(images, o["files"], victim, o["seed"])
    before = _snapshot(root, out)
    args = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", f"folder:{images}", "--n", o["n"],
            "--iterations", o["iterations"], "--batch-size", o["batch"], "--restarts", o["restarts"],
            "--device", o["device"], "--no-progress", "--no-latency", "--out", str(out)]
    for prefix, key, value in o["sets"]:
        args += ["--set", f"{prefix}{key}={value}"]
    _run_then_table(args, out)
    _assert_nothing_outside_changed(root, out, victim, before)


# ---- generator options, seeds, learning rates and image counts -------------------------------------------
@contextlib.contextmanager
def memory_ceiling(extra: int = 8 << 30):
    """Lower the soft address-space limit to the current size + ``extra`` while an example runs, so that
    an input that would take the machine's memory fails with an allocation error (which the toolkit
    must turn into a message) instead of having the kernel kill the test process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    ceiling = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


HUGE = ["99999999999999999999", str(2**53), str(2**53 + 1), str(-2**53 - 1), str(2**63 - 1), str(2**63),
        str(-2**63), str(-2**63 - 1), str(2**64), "1e3", "-0", "nan", "x", ""]
GEN_OPTS = st.lists(st.one_of(
    st.tuples(st.just("seed"), st.one_of(st.sampled_from(HUGE), st.integers(-1000, 1000).map(str),
                                         st.integers(-2**70, 2**70).map(str))),
    # not the valid large resolutions (2048 and up): their memory is not estimated, so they take minutes and more
    # memory than CI has (4096 had the kernel kill the process on a 23 GB machine, 2026-12-01)
    st.tuples(st.just("resolution"), st.sampled_from(["4", "8", "16", "32", "0", "-4", "3", "100", "100000",
                                                      "1e3", "32.0", "abc", ""])),
    st.tuples(st.just("device"), st.sampled_from(["cpu", "cuda", "cuda:7", "meta", "mps", "nonsense", ""])),
    st.tuples(st.just("tiny"), st.sampled_from(["true", "1", "false", "maybe", ""])),
    st.tuples(st.sampled_from(["weights", "tiyn", "seed.x", " "]), TEXT_VALUES)), max_size=2)
# valid values are drawn about as often as broken ones, so that many examples run to the end
SEEDS = st.one_of(st.integers(-1000, 1000), st.integers(-2**53, 2**53), st.integers(-2**80, 2**80),
                  st.sampled_from(HUGE))
LEARNING_RATES = st.one_of(st.sampled_from(["1e300", "-1e300", "1e39", "3.4e38", "1e-300", "1e-46", "nan", "inf",
                                            "-inf", "-1", "0", "-0", "1", "1e3", "0x10", "1_000"]),
                           st.floats(1e-6, 1.0).map(str), st.sampled_from(["0.05", "0.1", "1e-3"]),
                           st.floats(allow_nan=True, allow_infinity=True).map(str))
COUNTS = st.sampled_from(["1", "2", "3"] * 5 + ["0", "-1", str(10**9), str(10**12), str(2**62), str(2**63 - 1),
                                                str(2**63), str(2**64), "1e3", "x"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(o=st.fixed_dictionaries({"gen_opts": GEN_OPTS, "seed": SEEDS, "lr": LEARNING_RATES, "n": COUNTS,
                                 "lr_key": st.sampled_from(["lr", "single-code.lr"]),
                                 "batch": st.sampled_from(["1", "2", None])}))
def test_random_generator_options_seeds_rates_and_counts_never_crash(tmp_path_factory, o):
    root, victim = _sandbox(tmp_path_factory, "prop-gen")
    out = root / "run"
    before = _snapshot(root, out)
    args = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", o["n"], "--iterations",
            "1", "--seed", str(o["seed"]), "--set", f"{o['lr_key']}={o['lr']}", "--device", "cpu", "--no-progress",
            "--no-latency", "--out", str(out)]
    args += ["--batch-size", o["batch"]] if o["batch"] else []
    for key, value in o["gen_opts"]:
        args += ["--gen-opt", f"{key}={value}"]
    with memory_ceiling():
        _run_then_table(args, out)
    _assert_nothing_outside_changed(root, out, victim, before)


# ---- gib table on a run folder with planted files and links ------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prop-template") / "run"
    r = CliRunner().invoke(main, ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n",
                                  "2", "--iterations", "1", "--device", "cpu", "--no-progress", "--no-latency",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


PLANT_NAMES = ["table.md", "table.csv", "table.tex", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm",
               "results.sqlite-journal", ".lock", "report", "targets", "recon", "cache", "targets/generated/000.png",
               "recon/KEY/generated/000.png", "recon/KEY", "x.png", ".report-abcd1234.tmp", "table.md.tmp"]
PLANT_KINDS = st.sampled_from(["link-file", "link-dir", "link-dangling", "link-self", "hardlink", "file", "empty",
                               "dir", "fifo"])


def _plant(run_dir: Path, rel: str, kind: str, victims: tuple[Path, Path], rng: np.random.Generator) -> None:
    """Put a ``kind`` of entry at ``rel`` in place of what is there; nothing when a folder on the way
    was replaced by an earlier plant (the test itself never writes through a link)."""
    victim, victim_dir = victims
    path = run_dir / rel
    for parent in reversed(path.relative_to(run_dir).parents[:-1]):
        if (run_dir / parent).is_symlink() or not (run_dir / parent).is_dir():
            return
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if kind == "link-file":
        path.symlink_to(victim)
    elif kind == "link-dir":
        path.symlink_to(victim_dir, target_is_directory=True)
    elif kind == "link-dangling":
        path.symlink_to(victim_dir / "missing")
    elif kind == "link-self":
        path.symlink_to(path.name)  # a loop
    elif kind == "hardlink":
        os.link(victim, path)
    elif kind in ("file", "empty"):
        path.write_bytes(rng.bytes(int(rng.integers(1, 300))) if kind == "file" else b"")
    elif kind == "dir":
        path.mkdir()
    else:
        os.mkfifo(path)


class _FifoGuard:
    """Releases (and records) any reader blocked on a FIFO under ``root``: a blocked `gib table` fails
    the test instead of hanging it."""

    def __init__(self, root: Path):
        self.fifos = [Path(d) / f for d, _, files in os.walk(root) for f in files
                      if stat.S_ISFIFO(os.lstat(Path(d) / f).st_mode)]
        self.opened: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    self.opened.append(str(fifo))
                except OSError:
                    pass

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.opened


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(plants=st.lists(st.tuples(st.sampled_from(PLANT_NAMES), PLANT_KINDS), min_size=1, max_size=4),
       fmt=st.sampled_from(["markdown", "csv", "latex"]), seed=st.integers(0, 1000))
def test_table_on_a_folder_with_planted_files_and_links_never_crashes_or_writes_outside(
        tmp_path_factory, finished_run, plants, fmt, seed):
    root = tmp_path_factory.mktemp("prop-table")
    victim, victim_dir = root / "victim.txt", root / "victim-dir"
    victim.write_text("do not touch")
    victim_dir.mkdir()
    (victim_dir / "keep.png").write_bytes(b"victim folder")
    run_dir = root / "run"
    shutil.copytree(finished_run, run_dir, symlinks=True)
    rng, key = np.random.default_rng(seed), next((finished_run / "recon").iterdir()).name
    for name, kind in plants:
        _plant(run_dir, name.replace("KEY", key), kind, (victim, victim_dir), rng)
    before = _snapshot(root, run_dir)
    guard = _FifoGuard(run_dir)
    args = ["table", str(run_dir), "--format", fmt]
    try:
        result = CliRunner().invoke(main, args)
    finally:
        opened = guard.stop()
    _no_traceback(result, (args, plants))
    assert not opened, (plants, "a FIFO in the run folder was opened", opened)
    assert _snapshot(root, run_dir) == before, (plants, "something outside the run folder changed")
    assert victim.read_text() == "do not touch" and os.listdir(victim_dir) == ["keep.png"]
    shutil.rmtree(root, ignore_errors=True)
