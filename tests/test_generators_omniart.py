"""The omniart conditional eye DCGAN against the real weight file of ``omniart-eye-generator==0.1``.

Reference values come from ``tests/data/checkpoints/omniart_eye128.json`` (read from the real
file with torch 2.13 and cross-checked against the package's own ``Generator``). Tests that need
the file are skipped when the package is not installed (``pip install --no-deps
omniart-eye-generator==0.1``); the package's code is never imported. The loader's error paths
are tested with small files in tmp_path.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from importlib import metadata
from pathlib import Path

import pytest
import torch

from gan_inversion_bench import weights as weights_mod
from gan_inversion_bench.generators.omniart import (
    EYE_COLOURS,
    OMNIART_DIST,
    OMNIART_FILE,
    OmniartEyeDCGAN,
    omniart_eyes128,
)
from gan_inversion_bench.registry import GENERATORS
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

MANIFEST = json.loads((Path(__file__).parent / "data/checkpoints/omniart_eye128.json").read_text())
REF = MANIFEST["reference_output"]


@pytest.fixture(scope="module")
def weight_file() -> Path:
    try:
        return weights_mod.package_file(OMNIART_DIST, OMNIART_FILE)
    except WeightsNotFound as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def generator(weight_file: Path) -> OmniartEyeDCGAN:
    # the manifest's reference is for class 6 ("hazel")
    return omniart_eyes128(colour=6)


@pytest.fixture(scope="module")
def real_state(weight_file: Path) -> dict:
    return torch.load(weight_file, map_location="cpu", weights_only=True)


def test_file_sha256_and_container(weight_file: Path) -> None:
    data = weight_file.read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST["file_sha256"]
    # legacy (pre-1.6) pickle stream, not a zip archive
    assert data[:16].hex() == MANIFEST["container"]["first_bytes_hex"]
    assert not data.startswith(b"PK")


def test_keys_shapes_and_values_match_manifest(generator: OmniartEyeDCGAN, real_state: dict) -> None:
    assert list(real_state) == list(MANIFEST["keys"])
    state = generator.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == MANIFEST["keys"]
    assert list(state) == list(MANIFEST["keys"])  # same order too
    assert len(state) == MANIFEST["num_keys"]
    assert sum(p.numel() for p in generator.parameters()) == MANIFEST["num_params"]
    assert len(list(generator.parameters())) == MANIFEST["num_param_tensors"]
    assert sum(b.numel() for b in generator.buffers()) == MANIFEST["num_buffer_elements"]
    for key, dtype in MANIFEST["non_float32_dtypes"].items():
        assert str(state[key].dtype) == f"torch.{dtype}", key
    for key, (ref_sum, ref_abs) in MANIFEST["value_fingerprint_sum_abssum"].items():
        t = state[key].double()
        assert t.sum().item() == pytest.approx(ref_sum, rel=1e-6), key
        assert t.abs().sum().item() == pytest.approx(ref_abs, rel=1e-6), key
        assert torch.equal(state[key], real_state[key]), key


def test_module_list_matches_manifest(generator: OmniartEyeDCGAN) -> None:
    assert [f"main.{i}: {type(m).__name__}" for i, m in enumerate(generator.main)] == MANIFEST["module_list"]


def test_metadata(generator: OmniartEyeDCGAN) -> None:
    assert generator.name == "dcgan-omniart-eyes128"
    assert (generator.latent_dim, generator.resolution) == (100, 128)
    assert "omniart-eye-generator==0.1" in generator.weights_source
    assert generator.weights_licence == "MIT (omniart-eye-generator 0.1)"
    assert list(EYE_COLOURS) == MANIFEST["config"]["classes"]
    d = generator.describe()
    assert (d["colour"], d["colour_name"]) == (6, "hazel")
    json.dumps(d)


def test_reference_output(generator: OmniartEyeDCGAN) -> None:
    # manifest: z = torch.linspace(-1, 1, 100).view(1,100,1,1); labels = one_hot(6 "hazel", 8);
    # model.eval(); float32 CPU
    assert REF["input"].startswith("z = torch.linspace(-1, 1, 100).view(1,100,1,1)") and '6 "hazel"' in REF["input"]
    z = torch.linspace(-1, 1, 100).view(1, 100, 1, 1)
    with torch.no_grad():
        x = generator(z)
    assert list(x.shape) == REF["shape"] and x.dtype == torch.float32
    assert x.double().sum().item() == pytest.approx(REF["sum"], rel=1e-5)
    assert x.mean().item() == pytest.approx(REF["mean"], rel=1e-5)
    assert x.std().item() == pytest.approx(REF["std"], rel=1e-5)
    assert x[0, :, 0, 0].tolist() == pytest.approx(REF["pixel_0_0"], rel=1e-4, abs=1e-6)
    assert x[0, :, 64, 64].tolist() == pytest.approx(REF["pixel_64_64"], rel=1e-4, abs=1e-6)
    # the 2-D latent gives the same image; the model input is cat(z, one_hot(6))
    with torch.no_grad():
        assert torch.equal(generator(z.view(1, 100)), x)
    inp = generator.latent_to_input(z.view(1, 100))
    assert inp.shape == (1, 108, 1, 1)
    assert torch.equal(inp[0, :100, 0, 0], z.flatten())
    assert inp[0, 100:, 0, 0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0]


def test_colour_selects_the_class(real_state: dict) -> None:
    z = torch.linspace(-1, 1, 100).view(1, 100)
    images = {}
    for colour in (6, "hazel", 1):
        g = OmniartEyeDCGAN(colour=colour)
        g.load_state_dict(real_state)
        with torch.no_grad():
            images[colour] = g(z)
    assert images[6].sum().item() == pytest.approx(REF["sum"], rel=1e-5)
    assert torch.equal(images[6], images["hazel"])
    assert not torch.allclose(images[6], images[1], atol=1e-3)


def test_per_image_colours_with_real_weights(generator: OmniartEyeDCGAN, real_state: dict) -> None:
    # one instance built for colour 6, asked for colours 1 and 6 per image: each image is the image
    # of an instance built for its colour; unsetting gives the reference output back
    z = torch.linspace(-1, 1, 200).view(2, 100)
    with torch.no_grad():
        before = generator(z[:1])
        generator.set_conditions(torch.eye(8)[[1, 6]])
        try:
            mixed = generator(z)
        finally:
            generator.set_conditions(None)
        blue = OmniartEyeDCGAN(colour=1)
        blue.load_state_dict(real_state)
        torch.testing.assert_close(mixed[:1], blue(z[:1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(mixed[1:], generator(z[1:]), rtol=0, atol=1e-5)
        assert torch.equal(generator(z[:1]), before)


def test_split_point_shapes_match_manifest(generator: OmniartEyeDCGAN) -> None:
    points = generator.split_points
    assert len(points) == len(MANIFEST["module_list"]) + 1
    assert points[0].shape == (108, 1, 1)  # cat(z[100], one_hot[8])
    for i in range(len(MANIFEST["module_list"])):
        # split i+1 is the output of module main.i
        assert list(points[i + 1].shape) == MANIFEST["feature_shapes_batch1"][f"main.{i}"][1:], i
    # the README's stage outputs: main.3 1024@4, main.6 512@8, main.9 256@16, main.12 128@32,
    # main.15 64@64, main.17 3@128
    stage_outputs = {"4x4.dropout": (4, (1024, 4, 4)), "8x8.relu": (7, (512, 8, 8)),
                     "16x16.relu": (10, (256, 16, 16)), "32x32.relu": (13, (128, 32, 32)),
                     "64x64.relu": (16, (64, 64, 64)), "128x128.tanh": (18, (3, 128, 128))}
    for name, (index, shape) in stage_outputs.items():
        assert generator.resolve_split(name) == index
        assert points[index].shape == shape


def test_split_composition_with_real_weights(generator: OmniartEyeDCGAN) -> None:
    z = generator.sample_latents(2, seed=1)
    with torch.no_grad():
        image = generator(z)
        for name in ("input", "4x4.dropout", "16x16.relu", "64x64.relu"):
            f = generator.g1(z, name)
            torch.testing.assert_close(generator.g2(f, name), image, rtol=0, atol=1e-5)


def test_stays_in_eval_mode(generator: OmniartEyeDCGAN) -> None:
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = generator(z)
        generator.train()
        try:
            assert not generator.main[3].training  # the Dropout is inactive
            out = generator(z)
        finally:
            generator.eval()
    assert torch.equal(out, ref)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())


def test_tiny_needs_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    g = omniart_eyes128(tiny=True, seed=3, colour=2)
    convs = [m for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs[0].in_channels == 108
    assert [m.out_channels for m in convs] == [64, 32, 16, 8, 4, 3]
    assert g.weights_source == "random:3" and g.colour == 2
    assert torch.equal(g.main[0].weight, omniart_eyes128(tiny=True, seed=3).main[0].weight)
    assert not torch.equal(g.main[0].weight, omniart_eyes128(tiny=True, seed=4).main[0].weight)
    with torch.no_grad():
        assert g(g.sample_latents(2)).shape == (2, 3, 128, 128)
    assert GENERATORS.create("dcgan-omniart-eyes128", tiny=True, colour=5).describe()["colour_name"] == "green"


# ---- error paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("colour", [8, -1, 100])
def test_bad_colour(colour) -> None:
    with pytest.raises(ValueError, match=r"0 … 7") as e:
        omniart_eyes128(tiny=True, colour=colour)
    assert str(colour) in str(e.value) and "hazel" in str(e.value)
    with pytest.raises(ValueError, match=r"0 … 7"):
        OmniartEyeDCGAN(colour=colour, ngf=4)


@pytest.mark.parametrize("colour", ["purple", True, 2.5, None])
def test_bad_colour_type(colour) -> None:
    with pytest.raises(ValueError, match=r"0 … 7"):
        omniart_eyes128(tiny=True, colour=colour)


def test_bad_colour_is_reported_before_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    with pytest.raises(ValueError, match=r"0 … 7"):
        omniart_eyes128(colour=8)


def _no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.distribution

    def fake(name: str):
        if name == OMNIART_DIST:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(weights_mod.metadata, "distribution", fake)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    with pytest.raises(WeightsNotFound, match=r"pip install --no-deps omniart-eye-generator==0\.1"):
        omniart_eyes128()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="does not exist"):
        omniart_eyes128(weights=tmp_path / "nope.pth")


@pytest.fixture(scope="module")
def good_sd() -> dict:
    return OmniartEyeDCGAN().state_dict()


def _save(tmp_path: Path, obj, name: str = "ck.pth", legacy: bool = True) -> Path:
    """Save like the package's file: the legacy (non-zip) format unless ``legacy=False``."""
    path = tmp_path / name
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [True, False])
def test_user_file_loads(tmp_path: Path, good_sd: dict, legacy: bool) -> None:
    sd = {k: (v + 1 if v.is_floating_point() else v) for k, v in good_sd.items()}
    g = omniart_eyes128(weights=_save(tmp_path, sd, legacy=legacy), colour=3)
    assert torch.equal(g.main[0].weight, sd["main.0.weight"])
    assert g.weights_source.endswith("ck.pth") and g.colour == 3


def test_missing_key(tmp_path: Path, good_sd: dict) -> None:
    sd = dict(good_sd)
    del sd["main.5.running_var"]
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError) as e:
        omniart_eyes128(weights=path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys (1)" in msg and "main.5.running_var" in msg


def test_wrong_shape(tmp_path: Path, good_sd: dict) -> None:
    sd = dict(good_sd)
    sd["main.0.weight"] = torch.zeros(100, 1024, 4, 4)  # an unconditional input layer
    sd["main.4.bias"] = torch.zeros(1)
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError) as e:
        omniart_eyes128(weights=path)
    msg = str(e.value)
    assert str(path) in msg
    assert "main.0.weight: (108, 1024, 4, 4) vs (100, 1024, 4, 4)" in msg
    assert "unexpected keys (1)" in msg and "main.4.bias" in msg


def test_digiface_layout_is_rejected(tmp_path: Path) -> None:
    """A plain DCGAN's keys (no Dropout, so shifted indices) are reported, not loaded."""
    from gan_inversion_bench.generators.dcgan import DCGAN

    sd = DCGAN(latent_dim=108, resolution=128, ngf=64).state_dict()
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError) as e:
        omniart_eyes128(weights=path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys" in msg and "main.4.weight" in msg and "unexpected keys" in msg


@pytest.mark.parametrize("container, needle", [
    ([1, 2, 3], "found list"),
    ({"state_dict": {}}, "found keys ['state_dict']"),
    ("wrapped", "wrapped under the key 'netG_state_dict'"),
])
def test_wrong_container(tmp_path: Path, good_sd: dict, container, needle: str) -> None:
    obj = {"netG_state_dict": good_sd, "epoch": 3} if container == "wrapped" else container
    path = _save(tmp_path, obj)
    with pytest.raises(CheckpointError) as e:
        omniart_eyes128(weights=path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_non_tensor_value(tmp_path: Path, good_sd: dict) -> None:
    sd = dict(good_sd)
    sd["main.1.weight"] = [1.0, 2.0]
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError, match="not tensors") as e:
        omniart_eyes128(weights=path)
    assert str(path) in str(e.value) and "main.1.weight" in str(e.value)


@pytest.mark.parametrize("size", [100, 100_000])
def test_truncated_file(tmp_path: Path, weight_file: Path, size: int) -> None:
    path = tmp_path / "generator_model_state.pth"
    with weight_file.open("rb") as f:
        path.write_bytes(f.read(size))
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        omniart_eyes128(weights=path)
    assert str(path) in str(e.value)


class _Exploit:
    def __reduce__(self):
        return (_mark_executed, ())


_EXECUTED: list[int] = []


def _mark_executed() -> int:
    _EXECUTED.append(1)
    return 0


@pytest.mark.parametrize("legacy", [True, False])
def test_pickle_with_code_is_refused(tmp_path: Path, good_sd: dict, legacy: bool) -> None:
    sd = dict(good_sd)
    sd["main.0.weight"] = _Exploit()
    path = _save(tmp_path, sd, legacy=legacy)
    with pytest.raises(CheckpointError, match="refused by the safe loader") as e:
        omniart_eyes128(weights=path)
    assert str(path) in str(e.value)
    assert not _EXECUTED


def test_raw_pickle_with_code_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(CheckpointError) as e:
        omniart_eyes128(weights=raw)
    assert str(raw) in str(e.value)
    assert not _EXECUTED


def test_unknown_kwarg() -> None:
    with pytest.raises(TypeError, match="color"):
        omniart_eyes128(tiny=True, color=3)
    omniart_eyes128(tiny=True, resolution=None)  # None values are ignored (generic CLI plumbing)
