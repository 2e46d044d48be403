"""The ``gib`` command line through click's runner: listings, run + table, clear errors."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from gan_inversion_bench.cli import main


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_list_commands(cli):
    r = cli("list", "generators")
    assert r.exit_code == 0 and "dcgan-digiface64" in r.output and "pggan" in r.output
    r = cli("list", "methods")
    assert r.exit_code == 0 and "single-code" in r.output
    r = cli("list", "imagesets")
    assert r.exit_code == 0 and "generated+photos" in r.output


def test_list_generators_says_which_weights_are_here(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_CACHE", str(tmp_path))
    lines = {line.split()[0]: line for line in cli("list", "generators").output.splitlines()}
    assert "real weights: gan-face-generate==1.1.1" in lines["dcgan-digiface64"]
    assert "random weights" in lines["pggan-tiny"]
    assert "0 of 3 zoo checkpoints present" in lines["biggan-deep"]
    (tmp_path / "stylegan2-ffhq-config-f.pt").write_bytes(b"x")  # present by name (not loaded by the listing)
    lines = {line.split()[0]: line for line in cli("list", "generators").output.splitlines()}
    assert "1 of 4 zoo checkpoints present: stylegan2_ffhq1024" in lines["stylegan2"]


def test_list_generators_verbose_shows_split_shapes(cli):
    r = cli("list", "generators", "--verbose")
    assert r.exit_code == 0
    assert "512×4×4" in r.output  # dcgan-digiface64 after its first block
    assert "tiny random configuration" in r.output  # pggan without local weights


def test_run_then_table(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "2",
            "--iterations", "2", "--device", "cpu", "--out", str(out), "--no-progress")
    assert r.exit_code == 0, r.output
    assert "| single-code" in r.output and "PSNR (dB) ↑" in r.output
    for ext in ("md", "csv", "tex"):
        assert (out / f"table.{ext}").is_file()
    r = cli("table", str(out), "--format", "csv")
    assert r.exit_code == 0 and r.output.startswith("method,images,n")
    r = cli("run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "2",
            "--iterations", "2", "--device", "cpu", "--out", str(out), "--no-progress")
    assert "2 done, 0 to invert" in r.output


@pytest.mark.parametrize("args, message", [
    (["run", "-g", "dcgan-digifac64"], "Did you mean 'dcgan-digiface64'"),
    (["run", "-m", "singel-code"], "Did you mean 'single-code'"),
    (["run", "--iterations", "0"], "must be >= 1"),
    (["run", "--batch-size", "0"], "must be >= 1"),
    (["run", "--set", "noequals"], "expected KEY=VALUE"),
    (["run", "--set", "single-code.lr=-1", "-g", "pggan-tiny", "--n", "1", "--images", "generated"], "lr must be"),
    (["run", "-g", "pggan"], "pggan"),
    (["run", "--images", "/no/such/folder"], "unknown image set"),
    (["run", "--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["run", "--device", "bogus"],
     "device"),
    (["table", "."], "not a run folder"),
])
def test_clear_errors(cli, tmp_path, args, message):
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path / "o"), "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "gan_inversion_bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "run" in r.stdout and "table" in r.stdout


@pytest.fixture
def keep_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_threads_sets_torch_threads_and_the_record_says_so(tmp_path, monkeypatch, keep_threads, how):
    import torch

    from gan_inversion_bench import tables

    want = 3 if torch.get_num_threads() != 3 else 2  # a value that differs from the one the suite runs with
    args = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "1",
            "--iterations", "2", "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"]
    if how == "option":
        args = ["--threads", str(want), *args]
    else:
        monkeypatch.setenv("GIB_THREADS", str(want))
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == want
    devices = set(tables.load_records(tmp_path / "run")["device"])
    assert devices and all(d.endswith(f", {want} torch threads)") for d in devices), devices


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_refuses_impossible_values(value, keep_threads):
    r = CliRunner().invoke(main, ["--threads", value, "list", "methods"])
    assert r.exit_code != 0 and "--threads" in r.output and "Traceback" not in r.output
