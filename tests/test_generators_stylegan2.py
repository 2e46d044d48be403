"""StyleGAN2 (rosinality layout): checkpoint loading against the manifests and numerical checks.

The full-size checks use random tensors with exactly the manifest's keys and shapes (no real
weights are available here); the numerical checks compare the building blocks and the wiring of
a tiny network against independent, explicit computations.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan_inversion_bench.generator import SplitState
from gan_inversion_bench.generators.stylegan2 import (
    StyleGAN2Generator,
    fir_kernel,
    fused_leaky_relu,
    modulated_conv2d,
    stylegan2,
    upfirdn2d,
)
from gan_inversion_bench.registry import GENERATORS
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

MANIFESTS = Path(__file__).parent / "data" / "checkpoints"


def manifest(res: int) -> dict:
    return json.loads((MANIFESTS / f"stylegan2_rosinality_{res}.json").read_text())


def random_state(m: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) for k, shape in m["keys"].items()}


@pytest.fixture(scope="module")
def sd256() -> dict[str, torch.Tensor]:
    return random_state(manifest(256))


@pytest.fixture(scope="module")
def tiny() -> StyleGAN2Generator:
    return stylegan2(tiny=True, latent_space="w+")


# ---- architecture vs manifests ------------------------------------------------------------------
@pytest.mark.parametrize("res", [256, 1024])
def test_architecture_matches_manifest(res: int) -> None:
    m = manifest(res)
    g = StyleGAN2Generator(res)
    sd = g.state_dict()
    assert list(sd) == list(m["keys"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == m["keys"]
    assert sorted(g.buffer_names()) == sorted(m["buffers"])
    assert sum(p.numel() for p in g.parameters()) == m["num_params"]
    assert g.n_latent == m["config"]["n_latent"] and g.num_layers == m["config"]["num_layers_noise"]
    # split-point shapes by a dry run on the meta device (no compute)
    shapes = {p.name: p.shape for p in g.to("meta").split_points}
    for name, shape in m["feature_shapes_batch1"].items():
        if name == "conv1" or name.startswith("convs."):
            assert shapes[name] == tuple(shape[1:]), name
    assert shapes[f"to_rgbs.{len(g.to_rgbs) - 1}"] == (3, res, res)
    # the style index each module reads, as listed in the manifest
    n = len(g.to_rgbs)
    assert m["latent_index_per_module"][f"to_rgbs.{n - 1}"] == 2 * (n - 1) + 3 == g.n_latent - 1


# ---- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [256, 1024])
def test_load_manifest_shaped_checkpoint(res: int, tmp_path: Path, sd256: dict) -> None:
    m = manifest(res)
    sd = sd256 if res == 256 else random_state(m, seed=1)
    avg = torch.randn(512)
    path = tmp_path / f"stylegan2-{res}.pt"
    torch.save({"g_ema": sd, "latent_avg": avg, "d": {"conv.weight": torch.zeros(1)}}, path)
    g = GENERATORS.create("stylegan2", weights=str(path), latent_space="w+")
    assert g.resolution == res and g.n_latent == m["config"]["n_latent"]
    assert g.latent_dim == g.n_latent * 512
    own = g.state_dict()
    for k in ("style.8.weight", "conv1.conv.weight", "to_rgbs.0.upsample.kernel", "noises.noise_3",
              f"convs.{2 * len(g.to_rgbs) - 1}.activate.bias"):
        assert torch.equal(own[k], sd[k]), k
    assert torch.equal(g.latent_avg, avg)
    assert str(path) in g.weights_source and "rebuilt" not in g.weights_source
    assert "Nvidia Source Code License-NC" in g.weights_licence
    del g


def test_missing_optional_buffers_are_rebuilt(tmp_path: Path, sd256: dict) -> None:
    m = manifest(256)
    sd = {k: v for k, v in sd256.items() if k not in m["buffers"]}  # neither noises nor kernels
    path = tmp_path / "old-conversion.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(512)}, path)
    g = stylegan2(weights=path, noise_seed=3)
    src = g.weights_source
    assert "13 noise maps (noises.noise_0…noise_12) rebuilt" in src and "noise_seed 3" in src
    assert "12 FIR kernels rebuilt" in src
    k = torch.tensor([1.0, 3, 3, 1])
    expected = torch.outer(k, k) / 64 * 4  # every kernel of a config-f generator follows an upsampling
    for name in m["buffers"]:
        buf = g.get_buffer(name)
        if name.endswith(".kernel"):
            torch.testing.assert_close(buf, expected, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(3)
    for i in range(13):  # the fixed maps are seeded N(0,1) draws, in order
        r = 2 ** ((i + 5) // 2)
        assert torch.equal(g.get_buffer(f"noises.noise_{i}"), torch.randn(1, 1, r, r, generator=gen))
    assert torch.equal(g.style[3].weight, sd256["style.3.weight"])


def _tiny_checkpoint(tmp_path: Path, **extra) -> tuple[Path, StyleGAN2Generator]:
    g = stylegan2(tiny=True, seed=5)
    obj = {"g_ema": g.state_dict(), "latent_avg": g.latent_avg.clone()}
    obj.update(extra)
    path = tmp_path / "tiny.pt"
    torch.save({k: v for k, v in obj.items() if v is not None}, path)
    return path, g


def test_tiny_checkpoint_roundtrip_infers_architecture(tmp_path: Path) -> None:
    path, ref = _tiny_checkpoint(tmp_path)
    g = stylegan2(weights=path, latent_space="w")
    assert (g.resolution, g.style_dim, g.n_mlp, g.channels) == (ref.resolution, ref.style_dim, ref.n_mlp, ref.channels)
    ref.latent_space = "w"
    z = g.sample_latents(2, seed=1)
    torch.testing.assert_close(g(z), ref(z), rtol=0, atol=0)


def test_latent_avg_estimated_when_absent(tmp_path: Path) -> None:
    path, ref = _tiny_checkpoint(tmp_path, latent_avg=None)
    g = stylegan2(weights=path, latent_avg_samples=1000, latent_avg_seed=2)
    assert "latent_avg absent" in g.weights_source and "1000 z samples" in g.weights_source
    z = torch.randn(1000, g.style_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(g.latent_avg, ref.mapping(z).mean(0), rtol=1e-5, atol=1e-5)


def test_wrong_checkpoints_fail_readably(tmp_path: Path, sd256: dict) -> None:
    # missing key and wrong shape, on the full 256 layout
    bad = dict(sd256)
    del bad["convs.3.conv.modulation.weight"]
    bad["to_rgbs.2.bias"] = torch.zeros(1, 4, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": bad, "latent_avg": torch.zeros(512)}, path)
    with pytest.raises(CheckpointError) as e:
        stylegan2(weights=path)
    msg = str(e.value)
    assert "missing keys (1)" in msg and "convs.3.conv.modulation.weight" in msg
    assert "to_rgbs.2.bias: (1, 3, 1, 1) vs (1, 4, 1, 1)" in msg
    assert "wrong shapes" in msg and "['g_ema']" in msg
    # requested resolution differs from the file
    torch.save({"g_ema": sd256}, path)
    with pytest.raises(CheckpointError, match="256x256 generator, but resolution=1024"):
        stylegan2(weights=path, resolution=1024)


def test_wrong_containers_fail_readably(tmp_path: Path) -> None:
    g = stylegan2(tiny=True)
    bare = tmp_path / "bare.pt"
    torch.save(g.state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"bare generator state_dict.*'g_ema'"):
        stylegan2(weights=bare)
    other = tmp_path / "other.pt"
    torch.save({"model": g.state_dict()}, other)
    with pytest.raises(CheckpointError, match="no 'g_ema' entry; top-level keys: model"):
        stylegan2(weights=other)
    train = tmp_path / "train.pt"  # what train.py writes: includes an argparse.Namespace
    torch.save({"g_ema": g.state_dict(), "args": argparse.Namespace(size=16), "g_optim": {}}, train)
    with pytest.raises(CheckpointError) as e:
        stylegan2(weights=train)
    assert "weights_only=True" in str(e.value) and "train.py" in str(e.value)
    wrong_avg = tmp_path / "avg.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(7)}, wrong_avg)
    with pytest.raises(CheckpointError, match="latent_avg"):
        stylegan2(weights=wrong_avg)
    with pytest.raises(WeightsNotFound):
        stylegan2(weights=tmp_path / "nope.pt")


def test_factory_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFound) as e:
        stylegan2()  # default FFHQ checkpoint, not in the (empty) cache
    assert "stylegan2-ffhq-config-f.pt" in str(e.value) and "--weights PATH" in str(e.value)
    with pytest.raises(TypeError, match="bogus"):
        stylegan2(tiny=True, bogus=1)
    with pytest.raises(ValueError, match="latent_space"):
        stylegan2(tiny=True, latent_space="s")
    g = stylegan2(tiny=True, unused_option=None)  # None-valued options are ignored
    json.dumps(g.describe())
    # a zoo name resolves through the cache
    path, _ = _tiny_checkpoint(tmp_path)
    path.rename(tmp_path / "stylegan2-church-config-f.pt")
    assert stylegan2(weights="stylegan2_church256").resolution == 16


# ---- numerical building blocks --------------------------------------------------------------------
def test_fir_kernels_and_fused_lrelu() -> None:
    k = torch.tensor([1.0, 3, 3, 1])
    torch.testing.assert_close(fir_kernel(), torch.outer(k, k) / 64)
    torch.testing.assert_close(fir_kernel(gain=4), torch.outer(k, k) / 16)
    x, b = torch.randn(2, 5, 3, 3), torch.randn(5)
    y = x + b[None, :, None, None]
    torch.testing.assert_close(fused_leaky_relu(x, b), torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2))


def test_upfirdn2d_upsampling_equals_transposed_convolution() -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    k = fir_kernel(gain=4).double()
    y = upfirdn2d(x, k, up=2, pad=(2, 1))
    # zero insertion + pad (2, 1) + true convolution == stride-2 transposed conv, cropped by one
    ref = F.conv_transpose2d(x, k.expand(3, 1, 4, 4), stride=2, groups=3)[:, :, 1:11, 1:13]
    assert y.shape == (2, 3, 10, 12)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    const = upfirdn2d(torch.ones(1, 1, 6, 6), fir_kernel(gain=4), up=2, pad=(2, 1))
    torch.testing.assert_close(const[:, :, 2:-2, 2:-2], torch.ones(1, 1, 8, 8))  # gain 4 keeps the mean


def _explicit_modconv(x, weight, styles, demodulate, upsample):
    """Per-sample convolution with explicitly modulated (and demodulated) weights."""
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:
            y = F.conv_transpose2d(x[b:b + 1], w.transpose(0, 1), stride=2)
            blur = (torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 16).to(x.dtype)
            y = F.conv2d(y, blur.expand(y.shape[1], 1, 4, 4), padding=1, groups=y.shape[1])
        else:
            y = F.conv2d(x[b:b + 1], w, padding=w.shape[-1] // 2)
        outs.append(y)
    return torch.cat(outs)


@pytest.mark.parametrize("kernel,demodulate,upsample", [(3, True, False), (3, True, True), (1, False, False)])
def test_modulated_conv_equals_explicit_per_sample_conv(kernel: int, demodulate: bool, upsample: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 6, kernel, kernel, generator=gen, dtype=torch.float64) / math.sqrt(6 * kernel ** 2)
    s = torch.randn(3, 6, generator=gen, dtype=torch.float64) + 1
    y = modulated_conv2d(x, w, s, demodulate=demodulate, upsample=upsample,
                         blur=fir_kernel(gain=4).double() if upsample else None)
    torch.testing.assert_close(y, _explicit_modconv(x, w, s, demodulate, upsample), rtol=1e-10, atol=1e-10)
    assert y.shape[-1] == (10 if upsample else 5)


def test_styled_conv_module_matches_explicit(tiny: StyleGAN2Generator) -> None:
    conv = tiny.convs[0]  # an upsampling StyledConv
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, conv.conv.weight.shape[2], 4, 4, generator=gen)
    w = torch.randn(2, tiny.style_dim, generator=gen)
    noise = torch.randn(1, 1, 8, 8, generator=gen)
    mod = conv.conv.modulation
    styles = F.linear(w, mod.weight / math.sqrt(tiny.style_dim), mod.bias)
    weight = conv.conv.weight[0] / math.sqrt(conv.conv.weight.shape[2] * 9)
    y = _explicit_modconv(x.double(), weight.double(), styles.double(), True, True).float()
    y = y + conv.noise.weight * noise
    y = F.leaky_relu(y + conv.activate.bias[None, :, None, None], 0.2) * math.sqrt(2)
    with torch.no_grad():
        torch.testing.assert_close(conv(x, w, noise), y, rtol=1e-5, atol=1e-5)


def test_mapping_matches_explicit(tiny: StyleGAN2Generator) -> None:
    z = torch.randn(4, tiny.style_dim)
    h = z / torch.sqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for layer in tiny.style[1:]:
        h = F.linear(h, layer.weight * 0.01 / math.sqrt(tiny.style_dim), layer.bias * 0.01)
        h = F.leaky_relu(h, 0.2) * math.sqrt(2)
    with torch.no_grad():
        torch.testing.assert_close(tiny.mapping(z), h, rtol=1e-5, atol=1e-5)


def _reference_forward(g: StyleGAN2Generator, ws: torch.Tensor) -> torch.Tensor:
    """The synthesis as described in the reference layout (eager ToRGB, skip accumulation)."""
    noise = [g.get_buffer(f"noises.noise_{i}") for i in range(g.num_layers)]
    out = g.input.input.repeat(ws.shape[0], 1, 1, 1)
    out = g.conv1(out, ws[:, 0], noise[0])
    skip = g.to_rgb1(out, ws[:, 1])
    i = 1
    for c1, c2, n1, n2, rgb in zip(g.convs[::2], g.convs[1::2], noise[1::2], noise[2::2], g.to_rgbs, strict=True):
        out = c1(out, ws[:, i], n1)
        out = c2(out, ws[:, i + 1], n2)
        skip = rgb(out, ws[:, i + 2], skip)
        i += 2
    return skip


@pytest.mark.parametrize("space", ["z", "w", "w+"])
def test_synthesis_wiring_and_splits(space: str) -> None:
    g = stylegan2(tiny=True, latent_space=space, truncation=0.7)
    z = g.sample_latents(3, seed=11)
    with torch.no_grad():
        image = g(z)
        ws = g.layer_codes(z)
        torch.testing.assert_close(image, _reference_forward(g, ws), rtol=1e-5, atol=1e-5)
        for p in g.split_points:
            inter = g.g1(z, p.index)
            if p.index < len(g.split_points) - 1:
                assert isinstance(inter, SplitState) and set(inter.context) == {"styles", "skip"}
            torch.testing.assert_close(g.g2(inter, p.index), image, rtol=0, atol=0)
    with pytest.raises(TypeError, match="with_features"):
        g.g2(torch.zeros(1, *g.split_points[3].shape), 3)


def test_latent_spaces_sample_the_same_images() -> None:
    gz = stylegan2(tiny=True, latent_space="z", truncation=0.6)
    gw = stylegan2(tiny=True, latent_space="w", truncation=0.6)
    gp = stylegan2(tiny=True, latent_space="w+", truncation=0.6)
    assert (gz.latent_dim, gw.latent_dim, gp.latent_dim) == (32, 32, gz.n_latent * 32)
    z = gz.sample_latents(2, seed=4)
    torch.testing.assert_close(z, torch.randn(2, 32, generator=torch.Generator().manual_seed(4)))
    w, wp = gw.sample_latents(2, seed=4), gp.sample_latents(2, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(w, gz.truncate(gz.mapping(z)))
        assert torch.equal(wp.reshape(2, gp.n_latent, 32), w[:, None].expand(2, gp.n_latent, 32))
        torch.testing.assert_close(gz(z), gw(w), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gz(z), gp(wp), rtol=1e-5, atol=1e-5)
        # ψ = 0 collapses every sample onto the mean latent's image
        g0 = stylegan2(tiny=True, latent_space="z", truncation=0.0)
        imgs = g0(g0.sample_latents(3, seed=1))
        torch.testing.assert_close(imgs, imgs[:1].expand_as(imgs))
        gm = stylegan2(tiny=True, latent_space="w+")
        torch.testing.assert_close(gm(gm.mean_latent()), imgs[:1], rtol=1e-5, atol=1e-5)


def test_noise_maps_are_used_in_order() -> None:
    g = stylegan2(tiny=True)
    z = g.sample_latents(1, seed=2)
    with torch.no_grad():
        base = g(z)
        before = g.g1(z, "convs.1")  # convs.2 (stage 4) reads noise_3: still ahead of this split
        after = g.g1(z, "convs.2")  # ... and already behind this one
        g.noises.noise_3.add_(1.0)
        assert not torch.allclose(g(z), base)
        assert not torch.allclose(g.g2(before, "convs.1"), base)
        torch.testing.assert_close(g.g2(after, "convs.2"), base, rtol=0, atol=0)
        g.noises.noise_3.sub_(1.0)
        g.noises.noise_0.add_(1.0)  # conv1's map
        assert not torch.allclose(g(z), base)
        torch.testing.assert_close(g.g2(g.g1(z, 0), 0), g(z), rtol=0, atol=0)


def test_with_features_composition_uses_first_code_context(tiny: StyleGAN2Generator) -> None:
    z = tiny.sample_latents(4, seed=[1, 2, 3, 4])  # two images × two codes: rows (0,1) and (2,3)
    split = "convs.1"
    with torch.no_grad():
        state = tiny.g1(z, split)
        f = tiny.features_of(state)
        composed = torch.stack([(f[0] + f[1]) / 2, (f[2] + f[3]) / 2])
        rows = torch.tensor([0, 2])
        mixed = tiny.with_features(state, composed, rows)
        assert torch.equal(mixed.context["styles"], state.context["styles"][rows])
        assert torch.equal(mixed.context["skip"], state.context["skip"][rows])
        out = tiny.g2(mixed, split)
        assert out.shape == (2, 3, 16, 16)
        # replacing the features by the first code's own features gives that code's image back
        same = tiny.g2(tiny.with_features(state, f[rows], rows), split)
        torch.testing.assert_close(same, tiny(z[rows]), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, same)
