"""Values beyond what the machine or the working dtype can hold: every one is refused with a message
naming the option or setting and what was expected, before anything is allocated, and leaves no run
folder behind (never a traceback, an overflow from deep inside torch, or an out-of-memory kill).

* float settings beyond the float32 range (``--set lr=1e300``), checked for every method by the base
  class (``InversionMethod``), and by ``--set``/``--gen-opt`` parsing;
* generated image sets larger than the free memory (estimated before any image is generated) and
  the chunked generation that keeps a large but feasible set from needing one giant forward pass;
* integer options beyond their range (``--seed``, ``--gen-opt seed``, counts beyond 64 bits);
* an image file that cannot be read (permission denied) reported as such, not as a corrupt file;
* ``--restarts`` whose memory exceeds the machine, counted as restarts (not as images).
"""
from __future__ import annotations

import builtins
import dataclasses
import errno
import json
import os
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import imagesets
from gan_inversion_bench.cli import main
from gan_inversion_bench.cli_common import BoundedInt, coerce
from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.imagesets import ImageSetError, load_image_file
from gan_inversion_bench.method import FLOAT32_MAX, check_setting_ranges
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.registry import GENERATORS, METHODS
from gan_inversion_bench.store import ResultStore

BASE = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "2", "--iterations", "1",
        "--device", "cpu", "--no-progress", "--no-latency"]
INT64_MAX = 2**63 - 1


def gib(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_refused(result, *fragments: str, code: int | None = None) -> None:
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Overflow when unpacking" not in result.output, result.output
    for f in fragments:
        assert f in result.output, f"{f!r} not in:\n{result.output}"


@pytest.fixture
def before_any_work(monkeypatch):
    """The refusal must come before the image set is built (without it, ``--n 2**70`` would first build a
    list of 2**70 seeds: a test that must also fail safely where the check is missing)."""
    from gan_inversion_bench.harness import orchestrate

    def reached(*args, **kwargs):
        raise AssertionError("the run got as far as building its image set")

    monkeypatch.setattr(orchestrate, "load_image_set", reached)


def refused_run(tmp_path: Path, *extra: str, base: list[str] = BASE):
    """``gib run`` into a new folder; the refused command must leave no folder behind."""
    out = tmp_path / "run"
    result = gib(*base, *extra, "--out", str(out))
    assert not out.exists(), f"a refused run left {out} behind: {result.output}"
    return result


# ---- 1. float settings beyond the float32 range -------------------------------------------------------
@pytest.mark.parametrize("setting,shown", [("lr=1e300", "--set lr: 1e+300"), ("lr=1e39", "--set lr: 1e+39"),
                                           ("single-code.lr=1e39", "--set single-code.lr: 1e+39"),
                                           ("single-code.mse_weight=-1e39", "--set single-code.mse_weight: -1e+39")])
def test_a_float_setting_beyond_float32_is_refused_naming_it(tmp_path, before_any_work, setting, shown):
    """Was: ``RuntimeError: value cannot be converted to type float without overflow`` as a traceback."""
    assert_refused(refused_run(tmp_path, "--set", setting), shown, "beyond the float32 range",
                   "at most 3.4028235e+38")


def _float_fields(cls: type) -> list[str]:
    """The settings of a method declared as floats (``float``, ``float | None``)."""
    return [f.name for f in dataclasses.fields(cls.Settings)
            if isinstance(f.default, float) or ("float" in str(f.type) and "tuple" not in str(f.type))]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_float_setting_of_every_method_is_range_checked(name):
    """The base class checks every method's settings (no method can forget it), before the method's own
    checks run, in the constructor and in ``with_settings`` (``--iterations``, the tuned profile)."""
    cls = METHODS.get(name)
    fields = _float_fields(cls)
    assert fields, f"{name} declares no float setting"
    for field in fields:
        with pytest.raises(ValueError, match=rf"^{name}: setting {field} = 1e\+39 is beyond the float32 range"):
            cls(**{field: 1e39})
    with pytest.raises(ValueError, match=rf"setting {fields[0]} = -1e\+300 is beyond the float32 range"):
        cls.from_profile("quick").with_settings(**{fields[0]: -1e300})


def test_numbers_inside_containers_and_integers_beyond_64_bits_are_checked():
    with pytest.raises(ValueError, match=r"ilo: setting radii\[1\] = 1e\+39 is beyond the float32 range"):
        METHODS.get("ilo")(radii=(0.25, 1e39))
    with pytest.raises(ValueError, match=r"setting pivot_settings\.lr = 1e\+39 is beyond the float32 range"):
        METHODS.get("pivotal-tuning")(pivot_settings={"lr": 1e39})
    with pytest.raises(ValueError, match=r"setting iterations = 1180591620717411303424 is beyond the 64-bit "
                                         r"integer range; expected an integer from -9223372036854775808 to "
                                         r"9223372036854775807"):
        SingleCode(iterations=2**70)
    # the largest float32 is accepted (a diverging run is then recorded as failed, per image); so are NaN and
    # inf here: the method's own checks name what the setting must be
    check_setting_ranges("x", {"a": FLOAT32_MAX, "b": -FLOAT32_MAX, "c": float("nan"), "d": True, "e": "1e999"})
    assert SingleCode(lr=1e38).settings.lr == 1e38
    with pytest.raises(ValueError, match="lr must be a positive finite number, got inf"):
        SingleCode(lr=float("inf"))


def test_the_api_refuses_an_overflowing_setting_before_creating_the_run_folder(tmp_path, before_any_work):
    out = tmp_path / "api"
    with pytest.raises(ValueError, match=r"single-code: setting lr = 1e\+300 is beyond the float32 range"):
        run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=1,
                      device="cpu", budget=1, latency=False, overrides={"*": {"lr": 1e300}}), out,
            progress=False, echo=lambda s: None)
    assert not out.exists()


def test_generator_and_task_options_beyond_float32_are_refused_when_parsed():
    with pytest.raises(click.BadParameter, match=r"--gen-opt truncation: 1e\+39 is beyond the float32 range"):
        coerce("1e39", 0.5, "--gen-opt truncation")
    with pytest.raises(click.BadParameter, match=r"--set pmsfc\.lr: 1e\+300 is beyond the float32 range"):
        coerce("1e300", None, "--set pmsfc.lr")  # a setting whose default is None is read as JSON, then checked
    assert coerce("3e38", 1.0, "--set lr") == 3e38


# ---- 2. generated image sets beyond the free memory ------------------------------------------------
@pytest.fixture
def one_pass_limit(monkeypatch):
    """Fail a test whose generator gets a batch larger than a chunk (a "giant forward pass")."""
    forward = SplitGenerator.forward

    def guarded(self, z):
        assert z.shape[0] <= imagesets.GENERATION_CHUNK + 1, f"a forward pass over {z.shape[0]} images"
        return forward(self, z)

    monkeypatch.setattr(SplitGenerator, "forward", guarded)


def test_a_generated_set_beyond_the_free_memory_is_refused_with_the_estimate(tmp_path, monkeypatch, one_pass_limit):
    """Was: all n images in one forward pass, before the harness's memory check (which checks one image):
    ``DefaultCPUAllocator: can't allocate memory`` / ``MemoryError`` as a traceback, or an OOM kill."""
    monkeypatch.setattr(imagesets, "available_memory", lambda: 32 * 2**20)  # 32 MiB free
    result = refused_run(tmp_path, "--n", "5000")
    assert_refused(result, "Error: the generated set of 5000 images at 32x32 needs at least 0.0", "GiB to keep the "
                   "images, n × 3 × 32² × 4 bytes", "to generate them 64 at a time); 0.0312 GiB are free on cpu. "
                   "Lower the number of images (--n)", code=1)
    # from the API too (RunConfig.n_generated), before any image is generated
    with pytest.raises(ImageSetError, match="the generated set of 100000 images at 32x32 needs at least"):
        run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=100_000,
                      device="cpu", budget=1, latency=False), tmp_path / "api", progress=False, echo=lambda s: None)
    assert not (tmp_path / "api").exists()


def test_an_absurd_generated_set_is_refused_against_the_real_memory(tmp_path, one_pass_limit):
    G = GENERATORS.create("pggan-tiny")
    kept, work = imagesets.generation_memory(G, 10**15)
    assert kept >= 10**15 * 3 * 32 * 32 * 4 and work >= 65 * 3 * 32 * 32 * 4
    with pytest.raises(ImageSetError, match=r"the generated set of 1000000000000000 images at 32x32 needs at least "
                                            r"\S+ GiB .* GiB are free on cpu"):
        imagesets.generated(G, 10**15)


def test_chunked_generation_equals_the_one_pass_result(monkeypatch, one_pass_limit):
    """Each image depends only on its own seed: generated in chunks of 2 (the last chunk never a single
    image), the images are bit-identical to those of one forward pass (pggan on the CPU); a set of at
    most GENERATION_CHUNK images is one forward pass, as before."""
    G = GENERATORS.create("pggan-tiny").eval()
    one_pass = imagesets.generated(G, 7, seed=3)
    assert imagesets.generation_chunks(7) == [(0, 7)]
    monkeypatch.setattr(imagesets, "GENERATION_CHUNK", 2)
    assert imagesets.generation_chunks(7) == [(0, 2), (2, 4), (4, 7)]
    assert imagesets.generation_chunks(1) == [(0, 1)] and imagesets.generation_chunks(4) == [(0, 2), (2, 4)]
    chunked = imagesets.generated(G, 7, seed=3)
    assert [it.id for it in chunked] == [f"generated/{i:03d}" for i in range(7)] == [it.id for it in one_pass]
    for a, b in zip(one_pass, chunked, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.latent, b.latent) and a.meta == b.meta


def test_chunked_generation_keeps_each_images_class(monkeypatch):
    """generated-mixed: every image's class and latent are its own in any chunking (the pixels of this
    generator differ in the last bits between batch sizes, as between devices; the run's identity of a
    generated image is its latent and class, so a resume is unaffected)."""
    G = GENERATORS.create("biggan-deep", tiny=True).eval()
    one_pass = imagesets.generated(G, 5, seed=1, mixed_classes=True)
    monkeypatch.setattr(imagesets, "GENERATION_CHUNK", 2)
    chunked = imagesets.generated(G, 5, seed=1, mixed_classes=True)
    for a, b in zip(one_pass, chunked, strict=True):
        assert a.id == b.id and a.meta == b.meta and torch.equal(a.latent, b.latent)
        assert torch.equal(a.condition, b.condition)
        torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-6)


def test_running_out_of_memory_while_generating_is_reported(monkeypatch):
    """The estimate is a lower bound; an allocation failure while generating still names the set."""
    G = GENERATORS.create("pggan-tiny")

    def no_memory(self, z):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(SplitGenerator, "forward", no_memory)
    with pytest.raises(ImageSetError, match=r"the generated set of 3 images ran out of memory after 0 images "
                                            r"\(RuntimeError: .*can't allocate memory.*\); lower the number of images"):
        imagesets.generated(G, 3)


# ---- 3. integer options beyond their range -------------------------------------------------------------
@pytest.mark.parametrize("seed", ["99999999999999999999", str(10**17), str(-(2**53) - 1)])
def test_a_seed_beyond_its_range_is_refused_naming_the_option(tmp_path, before_any_work, seed):
    """Was: ``Error: Overflow when unpacking long long`` (from torch's generator, seeded with seed × 1000 + i)."""
    assert_refused(refused_run(tmp_path, "--seed", seed), "Invalid value for '--seed'",
                   "expected an integer from -9007199254740992 to 9007199254740992", f"got {seed}", code=2)


def test_a_generator_option_beyond_64_bits_is_refused_naming_it(tmp_path, before_any_work):
    assert_refused(refused_run(tmp_path, "--gen-opt", "seed=99999999999999999999"),
                   "--gen-opt seed: expected an integer from -9223372036854775808 to 9223372036854775807 (64 bits), "
                   "got 99999999999999999999")
    assert_refused(refused_run(tmp_path, "--set", "single-code.iterations=99999999999999999999"),
                   "--set single-code.iterations: expected an integer from -9223372036854775808 to")


@pytest.mark.parametrize("option", ["--n", "--n-images", "--iterations", "--batch-size", "--restarts"])
def test_a_count_beyond_64_bits_is_refused_naming_the_option(tmp_path, before_any_work, option):
    assert_refused(refused_run(tmp_path, option, str(2**70)), f"Invalid value for '{option}'",
                   f"expected an integer of at most {INT64_MAX} (64 bits), got {2**70}", code=2)


def test_integer_options_from_a_config_file_and_gib_tune_are_range_checked(tmp_path, before_any_work):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"seed": 99999999999999999999}))
    assert_refused(refused_run(tmp_path, "--config", str(cfg)), "'seed': Invalid value for '--seed': expected an "
                   "integer from -9007199254740992 to 9007199254740992")
    assert_refused(gib("tune", "-g", "pggan-tiny", "--seed", str(2**32), "--out", str(tmp_path / "p.json")),
                   "Invalid value for '--seed'", "from 0 to 4294967295", code=2)
    assert_refused(gib("tune", "-g", "pggan-tiny", "--image-seed", str(2**60), "--out", str(tmp_path / "p.json")),
                   "Invalid value for '--image-seed'", "from -9007199254740992 to 9007199254740992", code=2)
    assert not (tmp_path / "p.json").exists()
    assert BoundedInt(-(2**53), 2**53).convert("-1", None, None) == -1  # negative seeds stay valid


def test_the_api_refuses_a_seed_or_generator_option_beyond_its_range(tmp_path, before_any_work):
    for config, message in [
        (RunConfig(generator="pggan-tiny", images="generated", seed=10**17), r"the seed \(--seed\) must be an integer "
         r"from -9007199254740992 to 9007199254740992 .*got 100000000000000000$"),
        (RunConfig(generator="pggan-tiny", images="generated", generator_options={"seed": 2**64}),
         r"generator option seed \(--gen-opt seed\) must be an integer from -9223372036854775808 to "),
    ]:
        with pytest.raises(RunError, match=message):
            run(config, tmp_path / "api", progress=False, echo=lambda s: None)
        assert not (tmp_path / "api").exists()


# ---- 4. an image file that cannot be read --------------------------------------------------------------
@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """An image folder with one good image and ``secret.png`` that this user may not read: chmod 000, and,
    since root reads it anyway (the tests run as root), ``open`` raises the PermissionError a user gets."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("good.png", "secret.png"):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(folder / name)
    secret = folder / "secret.png"
    secret.chmod(0)
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(secret):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(secret))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    yield folder, secret
    secret.chmod(0o644)


def test_an_unreadable_image_is_skipped_with_the_true_reason(tmp_path, unreadable):
    """Was: ``corrupt or truncated image (PermissionError: …)``."""
    folder, secret = unreadable
    with pytest.raises(ImageSetError, match=r"secret\.png: cannot be read: permission denied \(PermissionError: "
                                            r"\[Errno 13\] Permission denied: .*\); expected a file this user may "
                                            r"read"):
        load_image_file(secret, 32)
    out = tmp_path / "run"
    result = gib("run", "-g", "pggan-tiny", "-m", "single-code", "--images", f"folder:{folder}", "--iterations", "1",
                 "--device", "cpu", "--no-progress", "--no-latency", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"skipped {secret}: {secret}: cannot be read: permission denied" in result.output, result.output
    assert "corrupt" not in result.output
    with ResultStore(out, create=False) as store:
        assert [r["image_id"] for r in store.results()] == ["folder/good.png"]


def test_other_read_errors_are_not_called_corruption(tmp_path, monkeypatch):
    path = tmp_path / "eio.png"
    Image.new("RGB", (4, 4)).save(path)
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    with pytest.raises(ImageSetError, match=r"eio\.png: cannot be read \(OSError: \[Errno 5\] Input/output error"):
        load_image_file(path, 32)


# ---- 5. restarts beyond the memory -------------------------------------------------------------------
def test_restarts_beyond_the_memory_are_counted_as_restarts(tmp_path):
    """Was: ``single-code: 1000000000000000 image(s) at budget 1 …`` (the restarts counted as images)."""
    result = refused_run(tmp_path, "--restarts", "1000000000000000")
    assert_refused(result, "Error: single-code: 1 image(s) with 1000000000000000 restarts (--restarts) each, "
                   "1000000000000000 inversions in all, at budget 1 with 1 code(s) each need at least",
                   "Lower the restarts (--restarts), the budget (--iterations)", code=1)
    assert "1000000000000000 image(s)" not in result.output


def test_running_out_of_memory_while_building_the_generator_is_a_message(tmp_path, monkeypatch):
    """A valid but huge generator option (``--gen-opt resolution=1048576`` on pggan-tiny ends in the
    CPU allocator's error after ~20 s) is a one-line error naming the options; no folder is left."""
    from gan_inversion_bench.registry import GENERATORS

    def huge(name, **options):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 2199023255552 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(GENERATORS, "create", huge)
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "1",
                                  "--iterations", "1", "--device", "cpu", "--gen-opt", "resolution=1048576",
                                  "--out", str(out), "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "building generator pggan-tiny with options {'resolution': 1048576} ran out of memory on cpu" in r.output
    assert not out.exists()
