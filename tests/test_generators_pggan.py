"""PGGAN: loading genforce-layout checkpoints, split points as in the seeds, and the block math.

No real PGGAN weights are needed: checkpoints with exactly the keys and shapes of
``tests/data/checkpoints/pggan_{256,1024}.json`` are written to tmp_path. To keep them small,
most use stride-0 (expanded) tensors, which ``torch.save`` stores as one element each.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan_inversion_bench.generators.pggan import PGGAN, pggan, pggan_tiny
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

DATA = Path(__file__).parent / "data/checkpoints"
MANIFESTS = {res: json.loads((DATA / f"pggan_{res}.json").read_text()) for res in (256, 1024)}


def cheap_state(manifest: dict, *, lod: float = 0.0) -> dict[str, torch.Tensor]:
    """Manifest keys and shapes; each tensor one distinct constant (stride 0, tiny on disk)."""
    sd = {}
    for i, (key, shape) in enumerate(manifest["keys"].items()):
        sd[key] = torch.full((), 1e-3 * (i + 1)).expand(shape) if shape else torch.tensor(lod)
    return sd


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pggan")


@pytest.fixture(scope="module")
def file_256(ckpt_dir: Path) -> Path:
    """A full-size 256 checkpoint with random values (the real file's layout)."""
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v, generator=g) if v else torch.tensor(0.0)) for k, v in MANIFESTS[256]["keys"].items()}
    path = ckpt_dir / "pggan_bedroom256_generator.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def file_1024(ckpt_dir: Path) -> Path:
    path = ckpt_dir / "pggan_celebahq1024_generator.pth"
    torch.save(cheap_state(MANIFESTS[1024]), path)
    return path


@pytest.fixture(scope="module")
def g256(file_256: Path) -> PGGAN:
    return pggan(weights=file_256)


# ---- loading real-layout checkpoints ---------------------------------------------------------
def test_load_256(g256: PGGAN, file_256: Path) -> None:
    saved = torch.load(file_256, weights_only=True)
    state = g256.state_dict()
    assert list(state) == list(MANIFESTS[256]["keys"])  # names and registration order
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert sum(p.numel() for p in g256.parameters()) == MANIFESTS[256]["num_params"]
    assert (g256.resolution, g256.latent_dim, g256.name) == (256, 512, "pggan")
    assert g256.weights_source == str(file_256)
    assert "BY-NC" in g256.weights_licence


@pytest.mark.parametrize("res", [256, 1024])
def test_split_points_equal_the_seeds_table(res: int, request: pytest.FixtureRequest) -> None:
    g = request.getfixturevalue("g256") if res == 256 else pggan(weights=request.getfixturevalue("file_1024"))
    if res == 1024:
        index = list(MANIFESTS[1024]["keys"]).index("layer5.conv.weight")
        assert g.layer5.conv.weight[0, 0, 0, 0].item() == pytest.approx(1e-3 * (index + 1))  # values were loaded
        assert sum(p.numel() for p in g.parameters()) == MANIFESTS[1024]["num_params"]
    table = MANIFESTS[res]["mganprior_split"]["shape_at_composing_layer"]
    points = g.split_points
    assert [p.index for p in points] == list(range(len(table)))
    assert {str(p.index): [1, *p.shape] for p in points} == table
    # the indices the seeds use: PmSFC ℓ=3, mGANprior ℓ=6 (default) and ℓ=8 (bedroom README)
    assert points[3].shape == (512, 8, 8) and points[6].shape == (512, 16, 16) and points[8].shape == (512, 32, 32)
    assert [p.name for p in points[:5]] == ["input", "4x4.dense", "4x4.conv", "8x8.conv0", "8x8.conv1"]
    assert points[-1].name == "torgb" and points[-2].name == f"{res}x{res}.conv1"
    # the stages are the seeds' Sequential: layer0 … layer{2B-1}, output{B-1}
    sequential = MANIFESTS[res]["mganprior_split"]["sequential_modules"]
    assert [m for _, m in g.stages()] == [getattr(g, n) for n in sequential]


def test_equalized_lr_scales(g256: PGGAN) -> None:
    # layer0 = TF "4x4/Dense": fan-in 512 with gain √2/4, the same as fan-in 512·16 with gain √2
    assert g256.layer0.wscale.scale == pytest.approx((math.sqrt(2) / 4) / math.sqrt(512), rel=1e-12)
    assert g256.layer1.wscale.scale == pytest.approx(math.sqrt(2) / math.sqrt(512 * 9), rel=1e-12)
    assert g256.layer12.wscale.scale == pytest.approx(math.sqrt(2) / math.sqrt(128 * 9), rel=1e-12)
    assert g256.output6.wscale.scale == pytest.approx(1 / math.sqrt(64), rel=1e-12)


def test_resolution_is_inferred_and_checked(file_256: Path) -> None:
    with pytest.raises(CheckpointError, match=r"256×256 PGGAN \(14 conv layers\), but resolution=1024"):
        pggan(weights=file_256, resolution=1024)


# ---- broken checkpoints ----------------------------------------------------------------------
def _save(tmp_path: Path, obj) -> Path:
    path = tmp_path / "pggan_broken256_generator.pth"
    torch.save(obj, path)
    return path


def _expect_error(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as e:
        pggan(weights=path)
    msg = str(e.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_wrong_and_extra_keys(tmp_path: Path) -> None:
    sd = cheap_state(MANIFESTS[256])
    del sd["layer5.wscale.bias"], sd["output3.conv.weight"]
    sd["layer9.conv.weight"] = torch.zeros(()).expand(256, 512, 3, 3)
    sd["layer0.wscale.bias"] = torch.zeros(256)
    sd["module.extra"] = torch.zeros(1)
    _expect_error(_save(tmp_path, sd), "missing keys (2)", "layer5.wscale.bias", "output3.conv.weight",
                  "unexpected keys (1)", "module.extra", "wrong shapes", "layer9.conv.weight: (256, 256, 3, 3) vs "
                  "(256, 512, 3, 3)", "layer0.wscale.bias: (512,) vs (256,)")


@pytest.mark.parametrize("obj, needle", [
    ([torch.zeros(1)], "found list"),
    ({"state_dict": {"layer0.conv.weight": torch.zeros(1)}}, "no PGGAN keys"),
    ({"generator": torch.zeros(1)}, "found keys ['generator']"),
])
def test_wrong_container(tmp_path: Path, obj, needle: str) -> None:
    _expect_error(_save(tmp_path, obj), needle)


def test_lod_must_be_zero(tmp_path: Path) -> None:
    _expect_error(_save(tmp_path, cheap_state(MANIFESTS[256], lod=0.5)), "lod = 0.5", "final models (lod 0)")


def test_no_weights_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound) as e:
        pggan()
    msg = str(e.value)
    for needle in ("pggan_<dataset><res>_generator.pth", "pggan_bedroom256_generator.pth", "mganprior",
                   "--weights PATH", "models/README.md", "pggan-tiny"):
        assert needle in msg
    with pytest.raises(WeightsNotFound) as info:
        pggan(resolution=1024)
    assert "pggan_celebahq1024_generator.pth" in str(info.value)
    with pytest.raises(WeightsNotFound, match="does not exist"):
        pggan(weights=tmp_path / "missing.pth")


# ---- the block math, checked by hand on the tiny config --------------------------------------
@pytest.fixture(scope="module")
def tiny() -> PGGAN:
    return pggan_tiny(seed=1)


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)


def _block(sd: dict, name: str, x: torch.Tensor, *, up: bool, pad: int, act: bool = True) -> torch.Tensor:
    """A conv block; ``act=False``: the linear output block (WScale gain 1 instead of sqrt(2))."""
    gain = math.sqrt(2) if act else 1.0
    w, b = sd[f"{name}.conv.weight"], sd[f"{name}.wscale.bias"]
    x = _pixel_norm(x)
    if up:
        x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    x = F.conv2d(x, w * (gain / math.sqrt(w[0].numel())), padding=pad) + b.view(1, -1, 1, 1)
    return F.leaky_relu(x, 0.2) if act else x


def reference_forward(sd: dict, z: torch.Tensor, blocks: int) -> torch.Tensor:
    x = _block(sd, "layer0", z.view(*z.shape, 1, 1), up=False, pad=3)
    x = _block(sd, "layer1", x, up=False, pad=1)
    for k in range(1, blocks):
        x = _block(sd, f"layer{2 * k}", x, up=True, pad=1)
        x = _block(sd, f"layer{2 * k + 1}", x, up=False, pad=1)
    return _block(sd, f"output{blocks - 1}", x, up=False, pad=0, act=False)


def test_layer0_by_hand(tiny: PGGAN) -> None:
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    zn = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    w = tiny.layer0.conv.weight.detach()  # [32, 512, 4, 4]
    assert tiny.layer0.wscale.bias.abs().sum() == 0  # PGGAN init: biases 0 …
    tiny_b = torch.linspace(-1, 1, 32)
    with torch.no_grad():
        tiny.layer0.wscale.bias.copy_(tiny_b)  # … so use a non-zero one to see it added
        try:
            got = tiny.g1(z, 1)
        finally:
            tiny.layer0.wscale.bias.zero_()
    expected = F.conv2d(zn[:, :, None, None], w, padding=3) * (math.sqrt(2) / math.sqrt(512 * 16))
    expected = F.leaky_relu(expected + tiny_b.view(1, -1, 1, 1), 0.2)
    assert got.shape == (3, 32, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got < 0).any()  # the LeakyReLU output is raw: no PixelNorm applied after it


def test_full_forward_by_hand(tiny: PGGAN) -> None:
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(5))
    sd = {k: v.detach() for k, v in tiny.state_dict().items()}
    with torch.no_grad():
        got = tiny(z)
    torch.testing.assert_close(got, reference_forward(sd, z, tiny.num_blocks), rtol=1e-4, atol=1e-5)
    assert float(got.std()) > 0.1  # N(0, 1) weights with equalized lr keep activations O(1)


def test_init_is_pggan_style_and_seeded(tiny: PGGAN) -> None:
    w = tiny.layer3.conv.weight.detach()
    assert abs(float(w.mean())) < 0.05 and float(w.std()) == pytest.approx(1.0, abs=0.05)
    assert all(p.abs().sum().item() == 0 for n, p in tiny.named_parameters() if not n.endswith("conv.weight"))
    assert torch.equal(pggan_tiny(seed=1).layer3.conv.weight, w)
    assert not torch.equal(pggan_tiny(seed=2).layer3.conv.weight, w)
    g = pggan(tiny=True, seed=1)
    assert torch.equal(g.layer3.conv.weight, w) and g.name == "pggan" and g.weights_source == "random:1"


def test_g2_starts_with_pixel_norm(tiny: PGGAN) -> None:
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        image = tiny(z)
        for ell in range(len(tiny.split_points) - 1):  # every split with a non-empty G2, z included
            f = tiny.g1(z, ell)
            scale = 0.1 + 10 * torch.rand(f.shape[0], 1, *f.shape[2:], generator=gen)  # positive, per pixel
            torch.testing.assert_close(tiny.g2(f * scale, ell), image, rtol=1e-4, atol=1e-5)
