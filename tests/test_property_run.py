"""Property-based (hypothesis): random settings, option values and small random files thrown at
`gib run` and `gib table` never produce a traceback and never write outside the run folder."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
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
            out[str(p)] = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
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


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(o=OPTIONS)
def test_random_options_and_files_never_crash_or_write_outside(tmp_path_factory, o):
    root = tmp_path_factory.mktemp("prop")
    victim = root / "victim.txt"
    victim.write_text("do not touch")
    images, out = root / "images", root / "run"
    _write_files(images, o["files"], victim, o["seed"])
    before = _snapshot(root, out)
    args = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", f"folder:{images}", "--n", o["n"],
            "--iterations", o["iterations"], "--batch-size", o["batch"], "--restarts", o["restarts"],
            "--device", o["device"], "--no-progress", "--no-latency", "--out", str(out)]
    for prefix, key, value in o["sets"]:
        args += ["--set", f"{prefix}{key}={value}"]
    runner = CliRunner()
    _no_traceback(runner.invoke(main, args), args)
    if (out / "results.sqlite").exists():
        _no_traceback(runner.invoke(main, ["table", str(out)]), ["table", str(out)])
    assert _snapshot(root, out) == before, "something outside the run folder changed"
    assert victim.read_text() == "do not touch"
    shutil.rmtree(root, ignore_errors=True)
