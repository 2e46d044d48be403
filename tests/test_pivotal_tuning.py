"""Pivotal tuning: the caller's generator untouched, tuning beats its pivot out of domain, the locality
term against two generator copies by hand, the pivot stage and its refusals, batch = alone. Tiny
generators, a few steps."""
from __future__ import annotations

import copy

import pytest
import torch

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.imagesets import photos
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method_tools import code_seeds
from gan_inversion_bench.methods import pivotal_tuning as P
from gan_inversion_bench.metrics import lpips
from gan_inversion_bench.perceptual import get_vgg_features

#: a short run with every term on: pivot (4 single-code iterations), perceptual terms, locality
SHORT = {"steps": 3, "pivot_profile": "quick", "pivot_budget": 4, "perceptual_size": None}
#: the same without the VGG passes (they dominate the time on tiny generators)
PIXELS = {**SHORT, "perceptual_weight": 0.0, "pivot_settings": {"perceptual_weight": 0.0}}


@pytest.fixture(scope="module")
def dcgan():
    return GENERATORS.create("dcgan-digiface64", tiny=True).eval()


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_registered_with_the_paper_defaults():
    m = METHODS.create("pivotal-tuning")
    s = m.settings
    assert isinstance(m, P.PivotalTuning) and m.budget == s.steps == 350
    assert (s.lr, s.pivot_method, s.pivot_budget, s.mse_weight) == (3e-4, "single-code", 450, 1.0)
    assert (s.locality_alpha, s.locality_weight, s.locality_l2_weight) == (30.0, 0.1, 0.1)
    assert m.get_tags().trains_generator and not m.get_tags().per_image_execution
    assert m.pivot_method().budget == 450 and m.with_budget(7).pivot_method().budget == 450


def test_callers_generator_is_bit_identical_after_invert():
    G = GENERATORS.create("dcgan-omniart-eyes128", tiny=True).eval()
    classes = G.sample_conditions(2, seed=[1, 2])
    G.set_conditions(classes)
    before, flags = state(G), [p.requires_grad for p in G.parameters()]
    with torch.no_grad():
        targets = G(G.sample_latents(2, seed=[5, 6])).clamp(-1, 1)
    r = P.PivotalTuning(**PIXELS, keep_weights=True).invert(G, targets, seeds=[1, 2])
    after = state(G)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in G.parameters()] == flags and not G.training
    assert torch.equal(G.conditions, classes)
    # the tuned weights did change, and each image's rebuild from them gives its reconstruction
    assert not torch.equal(r.latents["weights"][0], torch.nn.utils.parameters_to_vector(G.parameters()))
    for i in range(2):
        tuned = P.tuned_generator(G, r.latents["weights"][i])
        tuned.set_conditions(classes[i:i + 1])
        with torch.no_grad():
            torch.testing.assert_close(tuned(r.latents["z"][i:i + 1]), r.reconstructions[i:i + 1])


def test_tuning_beats_its_pivot_on_a_photo(dcgan):
    """Out of domain (a real photo): L(G(z_p; θ*)) < L(G(z_p; θ)), both by an independent loss; the
    pivot is exactly what the pivot method gives alone."""
    target = photos(dcgan.resolution)[0].image[None]  # [1, 3, 64, 64]
    m = P.PivotalTuning(**{**PIXELS, "steps": 10})
    r = m.invert(dcgan, target, seeds=[3])
    pivot = METHODS.get("single-code").from_profile("quick", iterations=4, perceptual_weight=0.0)
    assert torch.equal(r.latents["z"], pivot.invert(dcgan, target, seeds=[3]).latents["z"])
    loss = ReconstructionLoss(target, perceptual_weight=0.0)
    with torch.no_grad():
        pivot_loss = loss(dcgan(r.latents["z"]))
        tuned_loss = loss(r.reconstructions)
    torch.testing.assert_close(r.loss_history[0], pivot_loss, rtol=1e-4, atol=1e-6)
    assert tuned_loss.item() < 0.9 * pivot_loss.item(), (tuned_loss, pivot_loss)
    assert r.loss_history.shape == (10, 1) and r.iterations == 10


@pytest.mark.parametrize(("perceptual", "weight"), [("lpips", 1.0), ("vgg-relu3_3", 0.001)])
def test_locality_term_matches_two_generator_copies(dcgan, perceptual, weight):
    """λ_R·L_R at step 1 (θ* after one Adam step) recomputed with an untouched copy and a copy
    carrying θ*, w_r from the paper's eq. 4 with an explicit norm; P is the paper's LPIPS (the
    metric's function) or the toolkit's VGG term."""
    with torch.no_grad():
        target = dcgan(dcgan.sample_latents(1, seed=[42])).clamp(-1, 1)
    m = P.PivotalTuning(**{**SHORT, "steps": 2, "perceptual": perceptual, "perceptual_weight": weight})
    two = m.invert(dcgan, target, seeds=[7])
    one = m.clone(steps=1, keep_weights=True).invert(dcgan, target, seeds=[7])
    assert two.info["locality_history"][0, 0].item() == 0.0  # θ* = θ before the first step
    original, tuned = copy.deepcopy(dcgan), copy.deepcopy(dcgan)
    torch.nn.utils.vector_to_parameters(one.latents["weights"][0], tuned.parameters())
    z_p = two.latents["z"][0]
    z_r = dcgan.sample_latents(1, seed=[code_seeds([7], 2, P.LOCALITY_STREAM)[1]])[0]
    d = z_r - z_p
    w_r = (z_p + 30.0 * d / torch.sqrt((d * d).sum()))[None]
    vgg = get_vgg_features(dcgan.resolution)
    with torch.no_grad():
        a, b = tuned(w_r), original(w_r)
        p = lpips(a, b)[0] if perceptual == "lpips" else (vgg(a) - vgg(b)).abs().mean()
        want = 0.1 * (weight * p + 0.1 * (a - b).pow(2).mean())
    assert want.item() > 0
    torch.testing.assert_close(two.info["locality_history"][1, 0], want, rtol=1e-4, atol=1e-9)


def test_locality_code_is_alpha_away_from_the_pivot():
    pivot, random = torch.randn(3, 8), torch.randn(3, 8)
    w = P.locality_code(pivot, random, 30.0)
    torch.testing.assert_close((w - pivot).norm(dim=1), torch.full((3,), 30.0))
    cos = torch.nn.functional.cosine_similarity(w - pivot, random - pivot)
    torch.testing.assert_close(cos, torch.ones(3))


def test_batch_equals_each_image_alone(dcgan):
    with torch.no_grad():
        targets = dcgan(dcgan.sample_latents(2, seed=[11, 12])).clamp(-1, 1)
    m = P.PivotalTuning(**PIXELS)
    joint = m.invert(dcgan, targets, seeds=[4, 5])
    for i, seed in enumerate([4, 5]):
        alone = m.invert(dcgan, targets[i:i + 1], seeds=[seed])
        assert torch.equal(joint.reconstructions[i], alone.reconstructions[0])
        assert torch.equal(joint.loss_history[:, i], alone.loss_history[:, 0])


def test_unknown_pivot_method_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"pivot_method: unknown method 'single-cod'.*single-code") as e:
        P.PivotalTuning(pivot_method="single-cod")
    assert "Valid methods" in str(e.value) and "'pivotal-tuning'" not in str(e.value)
    with pytest.raises(ValueError, match="pivot_method"):
        P.PivotalTuning(pivot_method="pivotal-tuning")


@pytest.mark.parametrize(("settings", "match"), [
    ({"pivot_method": "mganprior"}, "cannot give a pivot"),
    ({"pivot_profile": "fast"}, "unknown profile"),
    ({"pivot_settings": {"n_codes": 3}}, "unknown setting"),
    ({"pivot_settings": {"lr": -1.0}}, "lr"),
    ({"pivot_settings": [1]}, "pivot_settings"),
    ({"pivot_budget": 0}, "pivot_budget"),
    ({"steps": 0}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"locality_weight": -0.1}, "locality_weight"),
    ({"locality_alpha": float("nan")}, "locality_alpha"),
    ({"mse_weight": 0.0, "perceptual_weight": 0.0}, "must not all be 0"),
    ({"keep_weights": "yes"}, "keep_weights"),
])
def test_impossible_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        P.PivotalTuning(**settings)


class NoWeights(SplitGenerator):
    """A parameter-free generator: nothing to tune."""

    latent_dim, resolution, name = 4, 4, "no-weights"

    def stages(self):
        return [("image", lambda x: torch.tanh(x.view(-1, 1, 2, 2)).repeat(1, 3, 2, 2))]


def test_a_generator_without_weights_is_unsupported():
    assert "no weights" in P.PivotalTuning().unsupported(NoWeights())


def test_bf16_autocast_tunes_like_fp32(dcgan):
    """The harness's bf16 context spans the whole invert; autocast's cache of the cast weights must not
    freeze the forward at the step-0 weights."""
    from gan_inversion_bench.precision import ExecutionOptions, execution_context

    with torch.no_grad():
        target = dcgan(dcgan.sample_latents(1, seed=[31])).clamp(-1, 1)
    m = P.PivotalTuning(**{**PIXELS, "steps": 4})
    fp32 = m.invert(dcgan, target, seeds=[2]).loss_history[:, 0]
    with execution_context(ExecutionOptions(precision="bf16"), "cpu"):
        bf16 = m.invert(dcgan, target, seeds=[2]).loss_history[:, 0]
    assert fp32[-1] < 0.8 * fp32[0]
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0)
