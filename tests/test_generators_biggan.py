"""BigGAN-deep (HF layout): checkpoint loading against the manifests and numerical checks.

Full-size checkpoints are random tensors with exactly the manifest's keys and shapes, saved in
the HF layout (``pytorch_model.bin`` + ``config.json``); the numerical checks compare the
building blocks of a tiny network against independent computations (torch's own hook-based
spectral norm, explicit formulas).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan_inversion_bench.generator import SplitState
from gan_inversion_bench.generators.biggan import (
    BIGGAN_DEEP_CONFIGS,
    TINY_CONFIG,
    BigGANDeepGenerator,
    GenBlock,
    SelfAttn,
    SNConv2d,
    SNLinear,
    StatsBatchNorm,
    biggan_deep,
    interpolated_stats,
    sn_weight,
)
from gan_inversion_bench.registry import GENERATORS
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

MANIFESTS = Path(__file__).parent / "data" / "checkpoints"


def manifest(res: int) -> dict:
    return json.loads((MANIFESTS / f"biggan_deep_{res}.json").read_text())


def write_hf_checkpoint(m: dict, directory: Path, *, seed: int = 0, legacy: bool = False,
                        names: tuple[str, str] = ("pytorch_model.bin", "config.json")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.rand(shape, generator=gen) + 0.5 for k, shape in m["keys"].items()}
    torch.save(sd, directory / names[0], _use_new_zipfile_serialization=not legacy)
    (directory / names[1]).write_text(json.dumps(m["container"]["config_json"], indent=2, sort_keys=True))
    return directory / names[0]


@pytest.fixture(scope="module")
def tiny() -> BigGANDeepGenerator:
    return biggan_deep(tiny=True, class_index=3, truncation=0.5)


# ---- architecture vs manifests ------------------------------------------------------------------
@pytest.mark.parametrize("res", [128, 256, 512])
def test_architecture_matches_manifest(res: int) -> None:
    m = manifest(res)
    cfg = m["container"]["config_json"]
    assert dict(BIGGAN_DEEP_CONFIGS[res].items()) == {**cfg, "output_dim": res}
    g = BigGANDeepGenerator(cfg)
    sd = g.state_dict()
    assert list(sd) == list(m["keys"])
    assert {k: list(v.shape) for k, v in sd.items()} == m["keys"]
    assert sorted(k for k, _ in g.named_buffers()) == sorted(m["buffers"])
    assert sum(p.numel() for p in g.parameters()) == m["num_params"]
    shapes = {p.name: p.shape for p in g.to("meta").split_points}
    for name, shape in m["feature_shapes_batch1"].items():
        if name.startswith("generator.layers."):
            assert shapes[name[len("generator."):]] == tuple(shape[1:]), name
    assert shapes["gen_z"] == (2048, 4, 4) and shapes["conv_to_rgb"] == (3, res, res)
    assert shapes["input"] == (256,)


# ---- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [128, 256, 512])
def test_load_manifest_shaped_checkpoint(res: int, tmp_path: Path) -> None:
    m = manifest(res)
    # 128: the legacy (pre-1.6) serialisation the HF files probably use, as a directory;
    # 256/512: the S3 file names, given as the .bin path
    if res == 128:
        binf = write_hf_checkpoint(m, tmp_path / "hf", legacy=True)
        weights = binf.parent
    else:
        binf = write_hf_checkpoint(m, tmp_path / "s3", names=(f"biggan-deep-{res}-pytorch_model.bin",
                                                             f"biggan-deep-{res}-config.json"))
        weights = binf
    g = GENERATORS.create("biggan-deep", weights=str(weights), class_index=207, truncation=0.4)
    assert g.resolution == res and g.latent_dim == 128 and g.class_index == 207
    sd = torch.load(binf, weights_only=True)
    own = g.state_dict()
    for k in ("embeddings.weight", "generator.gen_z.weight_orig", "generator.layers.8.gamma",
              "generator.layers.3.bn_2.running_vars", "generator.conv_to_rgb.weight_v"):
        assert torch.equal(own[k], sd[k]), k
    assert str(binf) in g.weights_source and "config" in g.weights_source
    assert g.weights_licence.startswith("Apache-2.0")


def _tiny_files(tmp_path: Path) -> tuple[Path, dict, dict]:
    g = biggan_deep(tiny=True, seed=2)
    d = tmp_path / "tiny"
    d.mkdir()
    sd = g.state_dict()
    torch.save(sd, d / "pytorch_model.bin")
    (d / "config.json").write_text(json.dumps(g.config))
    return d, dict(sd), dict(g.config)


def test_tiny_roundtrip_and_config_lookup(tmp_path: Path) -> None:
    d, _sd, _cfg = _tiny_files(tmp_path)
    ref = biggan_deep(tiny=True, seed=2, class_index=1)
    g = biggan_deep(weights=d, class_index=1)
    z = g.sample_latents(2, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(g(z), ref(z), rtol=0, atol=0)
    # no config.json: tiny is not a released resolution, so it must be given explicitly
    (d / "config.json").rename(tmp_path / "cfg.json")
    with pytest.raises(CheckpointError, match=r"no config.json"):
        biggan_deep(weights=d / "pytorch_model.bin")
    g2 = biggan_deep(weights=d / "pytorch_model.bin", config=tmp_path / "cfg.json")
    assert g2.resolution == 32


def test_builtin_config_used_without_config_file(tmp_path: Path) -> None:
    m = manifest(128)
    binf = write_hf_checkpoint(m, tmp_path / "x")
    (binf.parent / "config.json").unlink()
    g = biggan_deep(weights=binf)  # resolution inferred from the number of blocks
    assert g.resolution == 128 and "built-in BigGAN-deep-128 config" in g.weights_source
    with pytest.raises(CheckpointError, match="128px generator, but resolution=256"):
        biggan_deep(weights=binf, config=m["container"]["config_json"], resolution=256)


def test_wrong_checkpoints_fail_readably(tmp_path: Path) -> None:
    d, sd, cfg = _tiny_files(tmp_path)
    bad = dict(sd)
    del bad["generator.layers.2.bn_1.scale.weight_u"]
    bad["generator.gen_z.bias"] = torch.zeros(7)
    bad["generator.layers.0.conv_0.weight"] = torch.zeros(1)  # a post-hook key that SN layers never store
    torch.save(bad, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as e:
        biggan_deep(weights=d)
    msg = str(e.value)
    assert "missing keys (1)" in msg and "generator.layers.2.bn_1.scale.weight_u" in msg
    assert "unexpected keys (1)" in msg and "generator.layers.0.conv_0.weight" in msg
    assert "generator.gen_z.bias: (1024,) vs (7,)" in msg
    # a checkpoint of another family / a wrapped state_dict
    torch.save({"g_ema": sd}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        biggan_deep(weights=d)
    torch.save([1, 2], d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="found list"):
        biggan_deep(weights=d)
    (d / "pytorch_model.bin").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: (refused|not a readable)"):
        biggan_deep(weights=d)
    # broken configs
    (d / "config.json").write_text(json.dumps({**cfg, "output_dim": 64}))
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="output_dim 64 but the blocks upsample 4 → 32"):
        biggan_deep(weights=d)
    (d / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        biggan_deep(weights=d)
    with pytest.raises(WeightsNotFound):
        biggan_deep(weights=tmp_path / "missing.bin")


def test_factory_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFound) as e:
        biggan_deep(resolution=256)
    msg = str(e.value)
    assert "biggan-deep-256-pytorch_model.bin" in msg and "biggan-deep-256-config.json" in msg
    assert "--weights PATH" in msg
    with pytest.raises(TypeError, match="bogus"):
        biggan_deep(tiny=True, bogus=1)
    with pytest.raises(ValueError, match="class_index"):
        biggan_deep(tiny=True, class_index=10)  # the tiny config has 10 classes
    with pytest.raises(ValueError, match="truncation"):
        biggan_deep(tiny=True, truncation=0.0)
    g = biggan_deep(tiny=True, something=None)
    json.dumps(g.describe())
    # a resolution the random weights' config does not have was ignored (a 32px toy for resolution=128)
    with pytest.raises(ValueError, match=r"resolution=128 contradicts tiny=True \(the 32×32 toy\)"):
        biggan_deep(tiny=True, resolution=128)
    with pytest.raises(ValueError, match=r"resolution=256 contradicts given config, which builds a 32px"):
        biggan_deep(weights="random", config=dict(TINY_CONFIG), resolution=256)
    assert biggan_deep(tiny=True, resolution=32).resolution == 32
    assert biggan_deep(weights="random", config=dict(TINY_CONFIG), resolution=32, seed=1).weights_source == "random:1"
    # zoo names resolve through the cache (config next to the .bin under its S3 name)
    d, _, _ = _tiny_files(tmp_path)
    (d / "pytorch_model.bin").rename(tmp_path / "biggan-deep-128-pytorch_model.bin")
    (d / "config.json").rename(tmp_path / "biggan-deep-128-config.json")
    assert biggan_deep(weights="biggan_deep_128").resolution == 32


# ---- numerical building blocks --------------------------------------------------------------------
def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(torch.randn(t.shape, generator=gen))
    return module


def test_spectral_norm_uses_stored_vectors_like_torch_hook() -> None:
    lin = _randomised(SNLinear(6, 5))
    w, u, v = lin.weight_orig, lin.weight_u, lin.weight_v
    sigma = torch.dot(u, w @ v)
    torch.testing.assert_close(sn_weight(w, u, v), w / sigma)
    # torch's hook-based spectral_norm in eval mode: no power iteration, σ = uᵀ W v
    ref = torch.nn.Linear(6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.utils.spectral_norm(ref)
    with torch.no_grad():
        ref.weight_orig.copy_(w)
        ref.bias.copy_(lin.bias)
        ref.weight_u.copy_(u)
        ref.weight_v.copy_(v)
    ref.eval()
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-6, atol=1e-6)
        lin.train()
        torch.testing.assert_close(lin(x), ref(x), rtol=1e-6, atol=1e-6)  # and no update in train mode
    conv = _randomised(SNConv2d(3, 4, 3, padding=1))
    wc = conv.weight_orig.reshape(4, -1)
    x = torch.randn(2, 3, 5, 5)
    expected = F.conv2d(x, conv.weight_orig / (conv.weight_u @ wc @ conv.weight_v), conv.bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_statistics_use_the_reversed_interpolation() -> None:
    running = torch.randn(51, 4)
    # t = 0.405 → t/0.02 = 20.25: coef 0.25 weights row 20, 0.75 row 21 (ordinary lerp would be the other way round)
    torch.testing.assert_close(interpolated_stats(running, 0.405), running[20] * 0.25 + running[21] * 0.75)
    assert not torch.allclose(interpolated_stats(running, 0.405), running[20] * 0.75 + running[21] * 0.25)
    for t, row in ((0.4, 20), (0.7, 35), (1.0, 50), (0.02, 1)):
        assert torch.equal(interpolated_stats(running, t), running[row])
    bn = _randomised(StatsBatchNorm(4, cond_dim=6))
    with torch.no_grad():
        bn.running_vars.abs_()
        x, cond = torch.randn(2, 4, 3, 3), torch.randn(2, 6)
        t = 0.33  # 16.5
        mean = bn.running_means[16] * 0.5 + bn.running_means[17] * 0.5
        var = bn.running_vars[16] * 0.5 + bn.running_vars[17] * 0.5
        gain = 1 + F.linear(cond, sn_weight(bn.scale.weight_orig, bn.scale.weight_u, bn.scale.weight_v))
        shift = F.linear(cond, sn_weight(bn.offset.weight_orig, bn.offset.weight_u, bn.offset.weight_v))
        expected = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-4)
        expected = expected * gain[:, :, None, None] + shift[:, :, None, None]
        torch.testing.assert_close(bn(x, t, cond), expected, rtol=1e-5, atol=1e-5)
        plain = _randomised(StatsBatchNorm(4))
        plain.running_vars.abs_()
        ref = F.batch_norm(x, plain.running_means[20], plain.running_vars[20], plain.weight, plain.bias,
                           training=False, eps=1e-4)
        torch.testing.assert_close(plain(x, 0.4), ref, rtol=1e-5, atol=1e-5)


def test_genblock_matches_explicit_bottleneck() -> None:
    blk = _randomised(GenBlock(16, 8, 6, up=True, n_stats=51, eps=1e-4))
    with torch.no_grad():
        for m in blk.modules():
            if isinstance(m, StatsBatchNorm):
                m.running_vars.abs_()
    x, cond, t = torch.randn(2, 16, 4, 4), torch.randn(2, 6), 0.5

    def bn(m, h):
        mean, var = m.running_means[25], m.running_vars[25]
        g = 1 + cond @ sn_weight(m.scale.weight_orig, m.scale.weight_u, m.scale.weight_v).t()
        b = cond @ sn_weight(m.offset.weight_orig, m.offset.weight_u, m.offset.weight_v).t()
        return ((h - mean[:, None, None]) / (var[:, None, None] + 1e-4).sqrt() * g[:, :, None, None]
                + b[:, :, None, None])

    def conv(m, h, pad):
        return F.conv2d(h, sn_weight(m.weight_orig, m.weight_u, m.weight_v), m.bias, padding=pad)

    h = conv(blk.conv_0, bn(blk.bn_0, x).clamp_min(0), 0)
    assert h.shape[1] == 4  # bottleneck: in/4
    h = bn(blk.bn_1, h).clamp_min(0).repeat_interleave(2, 2).repeat_interleave(2, 3)
    h = conv(blk.conv_1, h, 1)
    h = conv(blk.conv_2, bn(blk.bn_2, h).clamp_min(0), 1)
    h = conv(blk.conv_3, bn(blk.bn_3, h).clamp_min(0), 0)
    skip = x[:, :8].repeat_interleave(2, 2).repeat_interleave(2, 3)  # drop half the channels, upsample
    with torch.no_grad():
        torch.testing.assert_close(blk(x, cond, t), h + skip, rtol=1e-4, atol=1e-4)


def test_self_attention_matches_explicit() -> None:
    att = _randomised(SelfAttn(16))
    x = torch.randn(2, 16, 4, 6)
    w = {n: sn_weight(m.weight_orig, m.weight_u, m.weight_v)[:, :, 0, 0] for n, m in att.named_children()}
    theta = torch.einsum("oc,bchw->bhwo", w["snconv1x1_theta"], x).reshape(2, 24, 2)
    phi = F.max_pool2d(torch.einsum("oc,bchw->bohw", w["snconv1x1_phi"], x), 2).flatten(2)  # [2, 2, 6]
    g = F.max_pool2d(torch.einsum("oc,bchw->bohw", w["snconv1x1_g"], x), 2).flatten(2)  # [2, 8, 6]
    out = torch.empty(2, 8, 24)
    for b in range(2):
        for p in range(24):
            a = torch.softmax(theta[b, p] @ phi[b], dim=0)  # attention of position p over pooled positions
            out[b, :, p] = g[b] @ a
    o = torch.einsum("oc,bcp->bop", w["snconv1x1_o_conv"], out).reshape(2, 16, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(att(x), x + att.gamma * o, rtol=1e-5, atol=1e-5)


def test_input_gen_z_and_output_stages(tiny: BigGANDeepGenerator) -> None:
    z = tiny.sample_latents(2, seed=3)
    with torch.no_grad():
        state = tiny.g1(z, "input")
        cond = torch.cat([z, tiny.embeddings.weight.t()[3].expand(2, -1)], dim=1)  # one-hot class 3
        torch.testing.assert_close(state.features, cond)
        assert torch.equal(state.context["cond"], cond)
        gz = tiny.generator.gen_z
        h = F.linear(cond, sn_weight(gz.weight_orig, gz.weight_u, gz.weight_v), gz.bias)
        h = h.reshape(2, 4, 4, 64).permute(0, 3, 1, 2)  # TF NHWC → NCHW
        torch.testing.assert_close(tiny.g1(z, "gen_z").features, h)
        last = tiny.g1(z, len(tiny.split_points) - 2).features
        g = tiny.generator
        full = g.conv_to_rgb(F.relu(g.bn(last, 0.5)))  # all 4 (= channel_width) channels
        assert full.shape[1] == 4
        torch.testing.assert_close(tiny(z), torch.tanh(full[:, :3]), rtol=1e-6, atol=1e-6)


def test_splits_conditioning_and_prior(tiny: BigGANDeepGenerator) -> None:
    z = tiny.sample_latents(3, seed=9)
    assert z.abs().max() <= 2 * 0.5 + 1e-6  # truncated normal, scaled by the truncation
    zz = biggan_deep(tiny=True, truncation=1.0).sample_latents(2000, seed=0)
    assert zz.abs().max() <= 2.0 and abs(zz.std().item() - 0.88) < 0.03  # std of N(0,1) cut at ±2 ≈ 0.880
    with torch.no_grad():
        image = tiny(z)
        for p in tiny.split_points:
            inter = tiny.g1(z, p.index)
            if p.index < len(tiny.split_points) - 1:
                assert isinstance(inter, SplitState) and set(inter.context) == {"cond"}
            torch.testing.assert_close(tiny.g2(inter, p.index), image, rtol=0, atol=0)
        # G2 reads cond from the context: another class's cond changes the image from any split
        other = biggan_deep(tiny=True, class_index=4, truncation=0.5)
        cond4 = other.g1(z, 0).context["cond"]
        s = tiny.g1(z, 5)
        assert not torch.allclose(tiny.g2(SplitState(s.features, {"cond": cond4}), 5), image)
        assert not torch.allclose(other(z), image)
        # the truncation selects the statistics used by every later batch norm
        tiny.truncation = 0.9
        try:
            assert not torch.allclose(tiny(z), image)
        finally:
            tiny.truncation = 0.5
        rows = torch.tensor([2, 0])
        mixed = tiny.with_features(tiny.g1(z, 4), tiny.g1(z, 4).features[rows], rows)
        torch.testing.assert_close(tiny.g2(mixed, 4), image[rows], rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="with_features"):
        tiny.g2(torch.zeros(1, *tiny.split_points[3].shape), 3)
    assert math.isclose(tiny.truncation, 0.5)


def test_per_image_classes_enter_through_the_embedding(tiny: BigGANDeepGenerator) -> None:
    # the conditioning vector of row r is cat(z_r, embeddings.weight @ c_image(r)); the default
    # class (3) is untouched while conditions are unset
    z = tiny.sample_latents(4, seed=2)
    c = torch.tensor([[0.0] * 9 + [1.0], [0.5, 0.5] + [0.0] * 8])
    with torch.no_grad():
        tiny.set_conditions(c)
        try:
            cond = tiny.g1(z, 0).context["cond"]
        finally:
            tiny.set_conditions(None)
        w = tiny.embeddings.weight
        expected = torch.cat([z, torch.stack([w[:, 9], w[:, 9], (w[:, 0] + w[:, 1]) / 2, (w[:, 0] + w[:, 1]) / 2])], 1)
        torch.testing.assert_close(cond, expected)
        assert torch.equal(tiny.g1(z, 0).context["cond"][:, 16:], w.t()[3].expand(4, -1))
    assert tiny.condition_dim == 10 and tiny.describe()["class_index"] == 3
