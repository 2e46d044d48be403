"""Hostile checkpoints and configs: each is refused with a CheckpointError that names the file and says
what was expected, before the loader builds (and allocates) anything the file's numbers ask for.

A checkpoint's keys and shapes set the size of the network built for it: a layer index of thirty digits
would make the loader compute 2**(10**29), and a few stride-0 (expanded) tensors declare gigabytes in a
file of a few hundred bytes. Every test runs with at most 1 GiB more address space than the process
already holds (:func:`bounded_memory`), so that where a check is missing the test fails with a
MemoryError instead of exhausting the machine.
"""
from __future__ import annotations

import json
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gan_inversion_bench.cli import main
from gan_inversion_bench.generators import biggan as biggan_module
from gan_inversion_bench.generators import pggan as pggan_module
from gan_inversion_bench.generators import stylegan2 as stylegan2_module
from gan_inversion_bench.generators import stylegan2_checkpoint
from gan_inversion_bench.generators.biggan import TINY_CONFIG, biggan_deep
from gan_inversion_bench.generators.pggan import PGGAN, infer_resolution, pggan
from gan_inversion_bench.generators.stylegan2 import StyleGAN2Generator, stylegan2
from gan_inversion_bench.weights import CheckpointError, check_state_dict, load_numpy_pickle


@pytest.fixture(autouse=True)
def bounded_memory() -> Iterator[None]:
    """RLIMIT_AS = the process's current size + 1 GiB for the test, restored afterwards."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        yield  # not Linux: run unguarded
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + 2**30 if hard == resource.RLIM_INFINITY else min(size + 2**30, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _not_built(*args: object, **kwargs: object) -> None:
    raise AssertionError("the loader built a network for a checkpoint it should have refused first")


def _refused(load: Callable[[], object], path: Path, *needles: str) -> str:
    """The CheckpointError of ``load()``: it names ``path`` and holds every needle."""
    with pytest.raises(CheckpointError) as e:
        load()
    msg = str(e.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


# ---- PGGAN: layer indices set the resolution -----------------------------------------------------------
@pytest.mark.parametrize("digits", [30, 5000])  # 2**(10**29) pixels; an index int() itself refuses
def test_pggan_huge_layer_index_is_refused_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           digits: int) -> None:
    monkeypatch.setattr(pggan_module, "PGGAN", _not_built)
    path = _save(tmp_path / "huge.pth", {"layer" + "9" * digits + ".conv.weight": torch.zeros(1)})
    _refused(lambda: pggan(weights=path), path, "more than 11 resolution blocks", "layer0 … layer21", "4096×4096")


def test_pggan_output_index_beyond_the_largest_network_is_refused(tmp_path: Path) -> None:
    """Was: ZeroDivisionError at pggan.py:96 (a 4M² network has 16384 // res = 0 channels)."""
    path = _save(tmp_path / "out20.pth", {"output20.wscale.bias": torch.zeros(3)})
    _refused(lambda: pggan(weights=path), path, "'output20.wscale.bias'", "output0 … output10")


def test_pggan_resolution_bound_is_4096() -> None:
    assert infer_resolution({"layer21.conv.weight": torch.zeros(1)}, source="f") == 4096
    assert infer_resolution({"output10.wscale.bias": torch.zeros(1)}, source="f") == 4096
    with pytest.raises(CheckpointError, match=r"^f: the key 'layer22\.conv\.weight' asks for a PGGAN of more than 11"):
        infer_resolution({"layer22.conv.weight": torch.zeros(1)}, source="f")


def test_gib_run_refuses_a_hostile_pggan_file_without_a_traceback(tmp_path: Path) -> None:
    path = _save(tmp_path / "out20.pth", {"output20.wscale.bias": torch.zeros(3)})
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "-g", "pggan", "--weights", str(path), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and "ZeroDivisionError" not in result.output, result.output
    assert f"Error: {path}: the key 'output20.wscale.bias'" in result.output, result.output
    assert not out.exists(), "the refused run left its folder behind"


# ---- dtypes (check_state_dict) ------------------------------------------------------------------------
def _pggan4_state(**replace: torch.Tensor) -> dict[str, torch.Tensor]:
    """A 4×4 PGGAN's keys and shapes, stride-0 tensors (a few bytes on disk), some entries replaced."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in PGGAN(resolution=4).state_dict().items()}
    state = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    state.update(replace)
    return state


@pytest.mark.parametrize("key, value, found", [
    ("layer1.conv.weight", torch.zeros((), dtype=torch.complex64).expand(512, 512, 3, 3), "torch.complex64"),
    ("layer1.conv.weight", torch.zeros((), dtype=torch.bool).expand(512, 512, 3, 3), "torch.bool"),
    ("lod", torch.tensor(0, dtype=torch.int64), "torch.int64"),
])
def test_pggan_non_float_weights_are_refused(tmp_path: Path, key: str, value: torch.Tensor, found: str) -> None:
    """Was: loaded (a complex weight with only a UserWarning that the imaginary part is dropped)."""
    path = _save(tmp_path / "dtype.pth", _pggan4_state(**{key: value}))
    _refused(lambda: pggan(weights=path), path, "wrong dtypes (key: expected vs found) (1)",
             f"{key}: floating point vs {found}")


def test_check_state_dict_reports_dtypes_like_shapes() -> None:
    expected = {"w": (2,), "b": (2,), "bn.num_batches_tracked": ()}
    state = {"w": torch.zeros(2, dtype=torch.complex64), "b": torch.zeros(2, dtype=torch.int32),
             "bn.num_batches_tracked": torch.tensor(3)}
    with pytest.raises(CheckpointError) as e:
        check_state_dict(state, expected, source="f.pth")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("f.pth: checkpoint does not match") and "num_batches_tracked" not in str(e.value)
    assert lines[1:] == ["  wrong dtypes (key: expected vs found) (2):", "    w: floating point vs torch.complex64",
                         "    b: floating point vs torch.int32"]
    # with the model's dtypes: an integer entry of the model may hold integers; float64 is floating point
    check_state_dict({**state, "w": torch.zeros(2, dtype=torch.float64)}, expected, source="f.pth",
                     dtypes={"w": torch.float32, "b": torch.int32})


def test_stylegan2_and_biggan_refuse_non_float_weights(tmp_path: Path) -> None:
    sd = stylegan2(tiny=True, latent_avg_samples=10).state_dict()
    sd["style.1.weight"] = sd["style.1.weight"].bool()
    path = _save(tmp_path / "sg.pt", {"g_ema": sd})
    _refused(lambda: _sg(path), path, "wrong dtypes", "style.1.weight: floating point vs torch.bool")
    bsd = biggan_deep(tiny=True).state_dict()
    bsd["embeddings.weight"] = bsd["embeddings.weight"].to(torch.complex64)
    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "config.json").write_text(json.dumps(TINY_CONFIG))
    binf = _save(tmp_path / "bg" / "pytorch_model.bin", bsd)
    _refused(lambda: biggan_deep(weights=binf), binf, "wrong dtypes", "embeddings.weight: floating point vs "
                                                                       "torch.complex64")


# ---- StyleGAN2: indices, style size and channels set the network ------------------------------------
def _sg(path: Path) -> None:
    stylegan2(weights=path, latent_avg_samples=10)


def test_stylegan2_huge_noise_index_is_refused_before_building(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stylegan2_module, "StyleGAN2Generator", _not_built)
    path = _save(tmp_path / "huge.pt", {"g_ema": {"noises.noise_" + "9" * 25: torch.zeros(1)}})
    _refused(lambda: _sg(path), path, "['g_ema']", "asks for a generator larger than 4096x4096",
             "to_rgbs.0 … to_rgbs.9")


@pytest.mark.parametrize("g_ema, needle", [
    ({"style.1.weight": torch.zeros(0, 0), "to_rgbs.0.x": torch.zeros(1)}, "the style size read from "
                                                                           "'style.1.weight' is 0"),
    ({"input.input": torch.zeros(1, 0, 4, 4), "to_rgbs.0.x": torch.zeros(1)}, "the 4x4 channels read from "
                                                                              "'input.input' is 0"),
    ({"input.input": torch.zeros(()).expand(1, 20000, 4, 4), "to_rgbs.0.x": torch.zeros(1)}, "is 20000"),
    ({"style.99.weight": torch.zeros(()).expand(512, 512), "to_rgbs.0.x": torch.zeros(1)},
     "the number of mapping layers read from 'style.99.weight' is 99"),
])
def test_stylegan2_sizes_out_of_bounds_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   g_ema: dict, needle: str) -> None:
    """Was: ZeroDivisionError (a zero size) or a network as large as the file declares."""
    monkeypatch.setattr(stylegan2_module, "StyleGAN2Generator", _not_built)
    path = _save(tmp_path / "sg.pt", {"g_ema": g_ema})
    _refused(lambda: _sg(path), path, needle, "style size and channels 1 … 4096")


def test_stylegan2_file_declaring_a_fraction_of_a_large_network_is_refused(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: 4000 channels declared by three stride-0 tensors built a 1.7 GiB network before the key check."""
    monkeypatch.setattr(stylegan2_module, "StyleGAN2Generator", _not_built)
    z, c = torch.zeros(()), 4000
    g_ema = {"input.input": z.expand(1, c, 4, 4), "convs.0.conv.weight": z.expand(1, c, c, 3, 3),
             "to_rgbs.0.conv.weight": z.expand(1, 3, c, 1, 1)}
    path = _save(tmp_path / "sg.pt", {"g_ema": g_ema})
    _refused(lambda: _sg(path), path, "most of its weights are missing")


def test_stylegan2_complete_but_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key present, as stride-0 tensors of a 64² network with 4096 channels: 5 GiB once built."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in StyleGAN2Generator(64, channels={2**i: 4096 for i in range(2, 7)})
                  .state_dict().items()}
    monkeypatch.setattr(stylegan2_module, "StyleGAN2Generator", _not_built)
    path = _save(tmp_path / "sg.pt", {"g_ema": {k: torch.zeros(()).expand(s) for k, s in shapes.items()}})
    _refused(lambda: _sg(path), path, "GiB), more than the", "at most 4 GiB")


@pytest.mark.parametrize("resolution", [16, 256, 1024])
def test_stylegan2_size_estimate_matches_the_network(resolution: int) -> None:
    with torch.device("meta"):
        g = StyleGAN2Generator(resolution, **({"style_dim": 32, "n_mlp": 2} if resolution == 16 else {}))
    values = sum(v.numel() for v in g.state_dict().values())
    arch = stylegan2_checkpoint.infer_architecture(g.state_dict())
    assert (arch["resolution"], arch["style_dim"], arch["n_mlp"]) == (resolution, g.style_dim, g.n_mlp)
    assert 0.98 * values <= stylegan2_checkpoint.estimated_values(arch) <= values


# ---- BigGAN: config.json sets the network ----------------------------------------------------------------
def _biggan_dir(tmp_path: Path, config: str) -> Path:
    d = tmp_path / "bg"
    d.mkdir()
    (d / "config.json").write_text(config)
    torch.save({}, d / "pytorch_model.bin")
    return d


@pytest.mark.parametrize("key, value, needle", [
    ("channel_width", -1, "config key 'channel_width' must be an integer in 1 … 1024, got -1"),
    ("channel_width", 0, "got 0"),
    ("channel_width", 10**6, "got 1000000"),  # was: a 32 GB allocation
    ("channel_width", float("inf"), "got inf"),  # JSON Infinity; was: OverflowError
    ("channel_width", "abc", "got 'abc'"),
    ("channel_width", None, "got None"),
    ("n_stats", -3, "'n_stats' must be an integer in 2 … 1024, got -3"),
    ("n_stats", 1, "got 1"),  # the truncation interpolation divides by n_stats - 1
    ("z_dim", 0, "'z_dim' must be an integer in 1 … 4096"),
    ("eps", "nan", "'eps' must be a number in (0, 1), got 'nan'"),
    ("layers", 5, "'layers' must be a list of 1 … 64 blocks"),
    ("layers", [[1, 2]], "'layers' block 0 is [1, 2]; expected [upsample"),
])
def test_biggan_config_values_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str,
                                          value: object, needle: str) -> None:
    monkeypatch.setattr(biggan_module, "BigGANDeepGenerator", _not_built)
    d = _biggan_dir(tmp_path, json.dumps({**TINY_CONFIG, key: value}))
    _refused(lambda: biggan_deep(weights=d), d / "config.json", needle)


def test_biggan_config_within_bounds_but_far_larger_than_its_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """channel_width 1024 on the toy's blocks: 1 G values (3.8 GiB) for a file of no tensors at all."""
    monkeypatch.setattr(biggan_module, "BigGANDeepGenerator", _not_built)
    d = _biggan_dir(tmp_path, json.dumps({**TINY_CONFIG, "channel_width": 1024}))
    _refused(lambda: biggan_deep(weights=d), d / "pytorch_model.bin", "most of its weights are missing")


def test_biggan_unreadable_config_names_the_file(tmp_path: Path) -> None:
    d = _biggan_dir(tmp_path, "")
    (d / "config.json").write_bytes(b"\xff\xfe{}")
    _refused(lambda: biggan_deep(weights=d), d / "config.json", "not valid JSON")


# ---- numpy pickles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, needle", [
    (b"\x80\x04\x95" + b"\xff" * 8 + b".", "OverflowError: FRAME length exceeds"),
    (b"\x80\x04\x8e" + (2**50).to_bytes(8, "little") + b"x", "MemoryError"),  # a bytes object of 1 PiB
])
def test_numpy_pickle_with_impossible_lengths_is_refused(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "s_matrix.pkl"
    path.write_bytes(data)
    _refused(lambda: load_numpy_pickle(path), path, "not a readable pickle of numpy arrays", needle)
