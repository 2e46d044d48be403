"""Image2StyleGAN (methods/image2stylegan.py) and the StyleGAN2 style-space API it needs.

Reference values are computed independently of the method: the W+ synthesis against the plain
``forward`` (a generator in the "z" or "w+" latent space, noise from its own buffers), and one Adam
step by hand (gradient by autograd through ``forward``, the loss written out, Adam's first step
``lr · g / (|g| + ε)``) against the method at one iteration.
"""
from __future__ import annotations

import copy

import pytest
import torch

from gan_inversion_bench import testing
from gan_inversion_bench.generators.stylegan2 import StyleGAN2Generator
from gan_inversion_bench.method_tools import tracing
from gan_inversion_bench.methods.image2stylegan import MEAN_W_SAMPLES, MEAN_W_SEED, Image2StyleGAN, mean_w_start
from gan_inversion_bench.perceptual import get_vgg_features
from gan_inversion_bench.registry import GENERATORS


def tiny(**kw):
    """The tiny StyleGAN2 (latent space "w+" unless ``kw`` says otherwise; the suite's cached one then)."""
    return GENERATORS.create("stylegan2", tiny=True, **kw) if kw else testing.tiny_generator("stylegan2")


def repeated(w, n):
    return w.unsqueeze(1).repeat(1, n, 1)  # [B, n, style_dim]


# ---- the generator's style-space API ---------------------------------------------------------------
def test_wplus_synthesis_reproduces_forward_from_z():
    G = tiny(latent_space="z", truncation=0.7)
    z = G.sample_latents(3, seed=4)
    with torch.no_grad():
        expected = G(z)
        w = G.latent_avg + 0.7 * (G.mapping(z) - G.latent_avg)  # truncation written out
        ws = repeated(w, G.n_latent)
        own = [getattr(G.noises, f"noise_{i}") for i in range(G.num_layers)]
        for noise in (None, G.noise_maps(), [n.repeat(3, 1, 1, 1) for n in own]):
            torch.testing.assert_close(G.synthesise_wplus(ws, noise), expected, rtol=0, atol=1e-6)


def test_wplus_synthesis_reproduces_forward_with_per_layer_codes():
    G = tiny()  # latent space "w+": forward takes the flattened per-layer codes
    ws = torch.randn(2, G.n_latent, G.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(G.synthesise_wplus(ws), G(ws.flatten(1)), rtol=0, atol=1e-6)


def test_per_image_noise_is_each_images_own():
    G = tiny()
    ws = repeated(G.latent_avg.reshape(1, -1), G.n_latent).repeat(2, 1, 1)
    gen = torch.Generator().manual_seed(3)
    noise = [torch.randn(2, 1, *m.shape[2:], generator=gen) for m in G.noise_maps()]
    with torch.no_grad():
        batch = G.synthesise_wplus(ws, noise)
        for i in range(2):
            H = copy.deepcopy(G)
            for k, n in enumerate(noise):
                setattr(H.noises, f"noise_{k}", n[i:i + 1].clone())  # the buffer replaced: plain forward
            torch.testing.assert_close(batch[i:i + 1], H(ws[i:i + 1].flatten(1)), rtol=0, atol=1e-5)
        assert not torch.allclose(batch, G.synthesise_wplus(ws)), "the noise maps had no effect"


def test_synthesise_wplus_refuses_bad_shapes():
    G = tiny()
    ws = repeated(G.latent_avg.reshape(1, -1), G.n_latent)
    with pytest.raises(ValueError, match=rf"\[B, {G.n_latent}, {G.style_dim}\]"):
        G.synthesise_wplus(ws[:, 1:])
    with pytest.raises(ValueError, match="noise must be 5 maps"):
        G.synthesise_wplus(ws, G.noise_maps()[1:])
    with pytest.raises(ValueError, match="noise must be 5 maps"):
        G.synthesise_wplus(ws, [torch.zeros(1, 1, 2, 2)] * G.num_layers)


# ---- the method: one Adam step by hand ---------------------------------------------------------------
def paper_term(x, target):
    """Image2StyleGAN's Σ_j mean((F_j(x) − F_j(y))²) over VGG16 conv1_1, conv1_2, conv3_2, conv4_2 (after
    their ReLU), computed with torchvision's own VGG16 module (the real weights loaded into it) and
    forward hooks, independently of the toolkit's layer slicing."""
    import torchvision

    from gan_inversion_bench.perceptual import IMAGENET_MEAN, IMAGENET_STD, backbone_features

    vgg = torchvision.models.vgg16(weights=None).features[:21].eval()
    vgg.load_state_dict(backbone_features("vgg16")[0][:21].state_dict())
    vgg.requires_grad_(False)
    taken = []
    for i in (1, 3, 13, 20):  # the ReLUs of conv1_1, conv1_2, conv3_2, conv4_2
        vgg[i].register_forward_hook(lambda _m, _i, out: taken.append(out))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    vgg((x * 0.5 + 0.5 - mean) / std)
    vgg((target * 0.5 + 0.5 - mean) / std)
    return sum((a - b).pow(2).mean() for a, b in zip(taken[:4], taken[4:], strict=True))


def hand_loss(x, target, weight, perceptual):
    if perceptual == "vgg-image2stylegan":
        return (x - target).pow(2).mean() + weight * paper_term(x, target)
    vgg = get_vgg_features(x.shape[-1])  # the perceptual network used directly, at the image size
    return (x - target).pow(2).mean() + weight * (vgg(x) - vgg(target)).abs().mean()


def adam_first_step(p, g, lr):
    # m̂ = g and v̂ = g² after the bias corrections of step 1 (β1 = 0.9, β2 = 0.999, ε = 1e-8)
    return p - lr * g / (g.abs() + 1e-8)


@pytest.mark.parametrize(("optimize_noise", "perceptual"),
                         [(False, "vgg-image2stylegan"), (True, "vgg-image2stylegan"), (False, "vgg-relu3_3")])
def test_one_iteration_is_one_adam_step_from_the_mean_w(optimize_noise, perceptual):
    G = tiny()
    with torch.no_grad():
        target = G(G.sample_latents(1, seed=11)).clamp(-1, 1)
    lr, weight = 0.05, 0.5
    H = copy.deepcopy(G)  # the plain forward, with the noise buffers as leaves that take a gradient
    ws = repeated(G.latent_avg.reshape(1, -1), G.n_latent).requires_grad_(True)
    noise = [getattr(H.noises, f"noise_{i}").clone().requires_grad_(optimize_noise) for i in range(G.num_layers)]
    for i, n in enumerate(noise):
        setattr(H.noises, f"noise_{i}", n)
    loss0 = hand_loss(H(ws.flatten(1)), target, weight, perceptual)
    grads = torch.autograd.grad(loss0, [ws, *noise] if optimize_noise else [ws])
    ws1 = adam_first_step(ws.detach(), grads[0], lr)
    with torch.no_grad():
        for i, n in enumerate(noise):
            setattr(H.noises, f"noise_{i}", adam_first_step(n.detach(), grads[1 + i], lr) if optimize_noise else n)
        image1 = H(ws1.flatten(1))

    m = Image2StyleGAN(iterations=1, lr=lr, perceptual_weight=weight, perceptual_size=None,
                       optimize_noise=optimize_noise, perceptual=perceptual, noise_schedule="joint")
    r = m.invert(G, target, seeds=0)
    torch.testing.assert_close(r.loss_history[0, 0], loss0.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.latents["ws"], ws1, rtol=0, atol=1e-5)
    torch.testing.assert_close(r.reconstructions, image1, rtol=0, atol=1e-5)
    assert ("noise_0" in r.latents) == optimize_noise
    if optimize_noise:
        torch.testing.assert_close(r.latents["noise_4"], H.noises.noise_4, rtol=0, atol=1e-5)


def test_sequential_noise_steps_ws_then_the_noise_each_with_its_own_adam():
    """Image2StyleGAN++'s order: the first half of the steps move ws with the noise fixed, the second
    half the noise with ws fixed (a fresh Adam); written out by hand for 2 steps."""
    G = tiny()
    with torch.no_grad():
        target = G(G.sample_latents(1, seed=11)).clamp(-1, 1)
    lr, weight = 0.05, 0.5
    H = copy.deepcopy(G)
    ws = repeated(G.latent_avg.reshape(1, -1), G.n_latent).requires_grad_(True)
    noise = [getattr(H.noises, f"noise_{i}").clone().requires_grad_(True) for i in range(G.num_layers)]
    for i, n in enumerate(noise):
        setattr(H.noises, f"noise_{i}", n)
    loss0 = hand_loss(H(ws.flatten(1)), target, weight, "vgg-image2stylegan")
    ws1 = adam_first_step(ws.detach(), torch.autograd.grad(loss0, [ws])[0], lr)
    loss1 = hand_loss(H(ws1.flatten(1)), target, weight, "vgg-image2stylegan")
    noise2 = [adam_first_step(n.detach(), g, lr) for n, g in zip(noise, torch.autograd.grad(loss1, noise), strict=True)]
    with torch.no_grad():
        for i, n in enumerate(noise2):
            setattr(H.noises, f"noise_{i}", n)
        image2 = H(ws1.flatten(1))

    points, reports = [], []
    m = Image2StyleGAN(iterations=2, lr=lr, perceptual_weight=weight, perceptual_size=None, optimize_noise=True)
    with tracing(lambda it, snapshot: points.append(it)):
        r = m.invert(G, target, seeds=0, progress=lambda done, total: reports.append((done, total)))
    assert r.info["steps"] == {"ws": 1, "noise_only": 1} and r.loss_history.shape == (2, 1)
    torch.testing.assert_close(r.loss_history[:, 0], torch.stack([loss0, loss1]).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.latents["ws"], ws1, rtol=0, atol=1e-5)  # the noise phase left ws alone
    torch.testing.assert_close(r.latents["noise_4"], noise2[4], rtol=0, atol=1e-5)
    torch.testing.assert_close(r.reconstructions, image2, rtol=0, atol=1e-5)
    assert points == [0, 1, 2] and reports == [(1, 2), (2, 2)]  # one count over both phases


@pytest.mark.parametrize(("schedule", "fraction", "steps"), [
    ("sequential", 0.5, (4, 4)), ("sequential", 0.25, (6, 2)), ("joint", 0.5, (8, 0))])
def test_the_phases_split_one_budget(schedule, fraction, steps):
    s = Image2StyleGAN(iterations=8, optimize_noise=True, noise_schedule=schedule, noise_fraction=fraction).settings
    assert s.phases() == steps
    assert Image2StyleGAN(iterations=8).settings.phases() == (8, 0)  # no noise: every step on ws


def test_the_start_is_the_mean_w_estimated_when_missing():
    G = StyleGAN2Generator(16, style_dim=32, n_mlp=2)  # built directly: latent_avg never set
    G.reset_parameters(0)
    assert not G.latent_avg.any()
    z = torch.randn(MEAN_W_SAMPLES, 32, generator=torch.Generator().manual_seed(MEAN_W_SEED))
    with torch.no_grad():
        expected = G.style(z).double().mean(0).float()
    start = mean_w_start(copy.deepcopy(G), 2)
    assert start.shape == (2, G.n_latent, 32)
    torch.testing.assert_close(start, expected.expand(2, G.n_latent, 32), rtol=0, atol=1e-5)


# ---- refusals ------------------------------------------------------------------------------------------
def test_refuses_generators_without_a_style_space():
    G = testing.tiny_generator("dcgan-digiface64")
    m = Image2StyleGAN.from_profile("test")
    reason = m.unsupported(G)
    assert reason is not None and "dcgan-digiface64" in reason and "style space" in reason
    with pytest.raises(ValueError, match=r"dcgan-digiface64.*no style space"):
        m.invert(G, torch.zeros(1, 3, G.resolution, G.resolution), seeds=0)
    assert m.unsupported(testing.tiny_generator("stylegan2")) is None


@pytest.mark.parametrize("setting,value", [
    ("iterations", 0), ("lr", -0.01), ("lr", float("nan")), ("perceptual_size", 0), ("optimize_noise", "yes"),
    ("mse_weight", -1.0), ("noise_schedule", "alternating"), ("noise_fraction", 1.0), ("noise_fraction", 0),
])
def test_impossible_settings_are_refused_by_name(setting, value):
    with pytest.raises(ValueError, match=setting):
        Image2StyleGAN(**{setting: value})


def test_both_loss_weights_zero_is_refused():
    with pytest.raises(ValueError, match="must not all be 0"):
        Image2StyleGAN(mse_weight=0.0, perceptual_weight=0.0)


# ---- with the noise optimised, a batch still gives every image its own result -------------------------
def test_noise_optimisation_batch_equals_alone_and_is_deterministic():
    base = testing.method_case("image2stylegan", "stylegan2")  # the suite's test profile at budget 8
    m, G, t = base.method.with_settings(optimize_noise=True), base.generator, base.targets
    joint = m.invert(G, t, seeds=[3, 4])
    for i in range(2):
        alone = m.invert(G, t[i:i + 1], seeds=[9])  # another seed too: the method is deterministic
        torch.testing.assert_close(joint.loss_history[:, i], alone.loss_history[:, 0], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(joint.reconstructions[i], alone.reconstructions[0], rtol=1e-3, atol=2e-3)
        torch.testing.assert_close(joint.latents["noise_4"][i], alone.latents["noise_4"][0], rtol=1e-3, atol=2e-3)
    assert joint.loss_history[-1].lt(joint.loss_history[0]).all()
    assert not torch.equal(joint.latents["noise_2"][0:1], G.noise_maps()[2]), "the noise maps were not optimised"


def test_result_keys_leave_out_noise_settings_that_do_not_act():
    """Without noise the schedule does nothing, so it is not in the key (runs stored before it existed
    resume); joint noise keeps the key such runs had; the sequential schedule is a new key."""
    from gan_inversion_bench.harness import RunConfig
    from gan_inversion_bench.harness.orchestrate import run_method_key
    from gan_inversion_bench.precision import ExecutionOptions
    from gan_inversion_bench.store import method_key

    def key(**settings):
        m = Image2StyleGAN.from_profile("quick", **settings)
        return run_method_key(m, RunConfig(generator="stylegan2", profile="quick"), ExecutionOptions())

    def before(**settings):  # the key as stored before the schedule existed
        s = {k: v for k, v in Image2StyleGAN.from_profile("quick", **settings).get_settings().items()
             if k not in ("noise_schedule", "noise_fraction")}
        return method_key("image2stylegan", "1", s, {"prepared": {}, "profile": "quick"})

    plain = key()
    assert plain == before() == key(noise_schedule="joint") == key(noise_fraction=0.25)
    joint = key(optimize_noise=True, noise_schedule="joint")
    assert joint == before(optimize_noise=True) == key(optimize_noise=True, noise_schedule="joint", noise_fraction=0.25)
    sequential = key(optimize_noise=True)
    assert len({plain, joint, sequential, key(optimize_noise=True, noise_fraction=0.25)}) == 4
