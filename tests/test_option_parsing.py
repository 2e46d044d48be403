"""Options and inputs a user will type: values parsed by type, devices, loss weights, camera images."""
from __future__ import annotations

import math

import click
import numpy as np
import pytest
import torch
from PIL import Image

from gan_inversion_bench.cli_common import coerce, generator_options
from gan_inversion_bench.cli_run import method_overrides
from gan_inversion_bench.harness import RunError, resolve_device
from gan_inversion_bench.imagesets import load_image_file
from gan_inversion_bench.methods.mganprior import MGANPrior
from gan_inversion_bench.methods.single_code import SingleCode


@pytest.mark.parametrize("text,value", [("False", False), ("false", False), ("0", False), ("no", False),
                                        ("True", True), ("yes", True), ("ON", True), ("1", True)])
def test_booleans_parse_by_type(text, value):
    assert coerce(text, True, "x") is value


def test_gen_opt_values_follow_the_factory_signature():
    opts = generator_options("pggan", ("tiny=False", "resolution=64", "seed=3"))
    assert opts == {"tiny": False, "resolution": 64, "seed": 3} and opts["tiny"] is False
    with pytest.raises(click.BadParameter, match="expected true or false, got 'maybe'"):
        generator_options("pggan", ("tiny=maybe",))
    with pytest.raises(click.BadParameter, match=r"takes no option 'tiyn'\. Did you mean 'tiny'"):
        generator_options("pggan", ("tiyn=true",))
    with pytest.raises(click.BadParameter, match="expected a number"):
        generator_options("pggan", ("seed=three",))
    with pytest.raises(click.BadParameter, match="finite"):
        generator_options("biggan-deep", ("truncation=nan",))


def test_integer_generator_options_written_as_floats():
    """`--gen-opt seed=1e3` is the integer 1000 (it reached torch.manual_seed as 1000.0, a traceback the
    property test found); a fractional or out-of-range one is refused naming the option."""
    assert generator_options("pggan-tiny", ("seed=1e3", "resolution=32.0")) == {"seed": 1000, "resolution": 32}
    assert type(generator_options("pggan-tiny", ("seed=1e3",))["seed"]) is int
    with pytest.raises(click.BadParameter, match=r"--gen-opt seed: expected an integer, got '1\.5'"):
        generator_options("pggan-tiny", ("seed=1.5",))
    with pytest.raises(click.BadParameter, match=r"--gen-opt seed: expected an integer from .* \(64 bits\)"):
        generator_options("pggan-tiny", ("seed=1e30",))


def test_the_tiny_test_network_refuses_tiny_false():
    """pggan-tiny ignored tiny=False and silently gave random weights; it names the real generator now."""
    from gan_inversion_bench.registry import GENERATORS

    assert GENERATORS.create("pggan-tiny", tiny=True).name == "pggan-tiny"
    with pytest.raises(ValueError, match="tiny=False asks for the real one: use the generator pggan with --weights"):
        GENERATORS.create("pggan-tiny", tiny=False)


def test_set_values_follow_the_setting_types():
    o = method_overrides(("mganprior.divide_by_n=false", "lr=0.5", "mganprior.alpha_lr=0.01"), ["mganprior"])
    assert o == {"mganprior": {"divide_by_n": False, "alpha_lr": 0.01}, "*": {"lr": 0.5}}
    with pytest.raises(click.BadParameter, match=r"--set mganprior\.divide_by_n: expected true or false"):
        method_overrides(("mganprior.divide_by_n=perhaps",), ["mganprior"])
    # a string setting keeps the text (found by the property test: "-1" became the int -1, and the optimiser
    # check then raised AttributeError instead of naming the bad value)
    assert method_overrides(("optimizer=-1", "single-code.optimizer=true"), ["single-code"]) == {
        "*": {"optimizer": "-1"}, "single-code": {"optimizer": "true"}}
    with pytest.raises(ValueError, match="unknown optimiser '-1'; expected 'sgd' or 'adam'"):
        SingleCode(optimizer="-1")
    with pytest.raises(ValueError, match="unknown optimiser -1; expected"):
        SingleCode(optimizer=-1)  # from Python: refused by the same check


@pytest.mark.parametrize("device,message", [
    ("mps", "MPS backend is not supported"), ("xla", "XLA/TPU"), ("meta", "holds no data"),
    ("gpu", "invalid device 'gpu'"),
])
def test_devices_a_user_will_try_get_a_message(device, message):
    with pytest.raises(RunError, match=message):
        resolve_device(device)


def test_a_cuda_index_beyond_the_machine_is_refused():
    with pytest.raises(RunError, match="cuda:7"):
        resolve_device("cuda:7")


@pytest.mark.parametrize("cls", [SingleCode, MGANPrior])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_non_finite_or_negative_loss_weights_are_refused(cls, bad):
    with pytest.raises(ValueError, match="mse_weight must be a finite number >= 0"):
        cls(mse_weight=bad)


def test_camera_images_are_shown_upright(tmp_path):
    """An image stored with EXIF orientation 6 (rotate 90° clockwise to view) loads exactly as the
    same picture stored upright without the tag."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)  # H=6, W=10 as stored
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "camera.png", exif=exif)
    Image.fromarray(np.ascontiguousarray(np.rot90(a, k=-1))).save(tmp_path / "upright.png")  # 10 high, 6 wide
    with Image.open(tmp_path / "camera.png") as raw:
        assert raw.size == (10, 6)  # stored sideways
    got, want = load_image_file(tmp_path / "camera.png", 6), load_image_file(tmp_path / "upright.png", 6)
    assert torch.equal(got, want)
    assert not torch.equal(got, load_image_file(tmp_path / "upright.png", 6).flip(-1))


def test_a_closed_pipe_does_not_stop_the_run(tmp_path):
    """`gib run | head -1`: the reader goes away after one line; the run still stores every result."""
    import subprocess
    import sys

    out = tmp_path / "r"
    cmd = (f"{sys.executable} -m gan_inversion_bench run -g pggan-tiny -m single-code --images generated --n 3 "
           f"--iterations 2 --device cpu --no-latency --out {out} | head -1")
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    from gan_inversion_bench.store import ResultStore

    with ResultStore(out, create=False) as s:
        assert len(s.results()) == 3, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]


def test_a_failed_run_leaves_no_new_folder_behind(tmp_path):
    from click.testing import CliRunner

    from gan_inversion_bench.cli import main

    out = tmp_path / "new-run"
    r = CliRunner().invoke(main, ["run", "-g", "pggan", "--weights", str(tmp_path / "missing.pth"), "-m",
                                  "single-code", "--iterations", "1", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 1 and "missing.pth" in r.output
    assert not out.exists()


def test_an_impossible_budget_is_refused_with_the_estimate(tmp_path):
    from gan_inversion_bench.harness import RunConfig, run

    with pytest.raises(RunError, match=r"need at least [0-9.e+]+ GiB; [0-9.e+]+ GiB are free"):
        run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=1,
                      budget=10**15, device="cpu", latency=False),
            tmp_path / "huge", progress=False, echo=lambda s: None)
    assert not (tmp_path / "huge").exists()
