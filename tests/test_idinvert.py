"""The domain-guided encoder (``encoder``) and in-domain inversion (``idinvert``): the encoder's cache
(keyed by generator content, refusing other people's files), determinism, eq. 4's objective and
domain regulariser against hand computations, and the improvement over the encoder alone. Tiny
generators and the ``test`` profile."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.generator import conditioned
from gan_inversion_bench.methods import idinvert as I


@pytest.fixture(scope="module")
def pggan():
    return GENERATORS.create("pggan-tiny").eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(pggan, cache):
    return I.IDInvert.from_profile("test").prepare(pggan, seed=0, cache_dir=cache)


def targets_of(G, seeds):
    with torch.no_grad():
        return G(G.sample_latents(len(seeds), seed=seeds)).clamp(-1, 1)


def cache_file(cache, method):
    return cache / f"idinvert-encoder-{method.cache_key_}.pt"


# ---- the cache -----------------------------------------------------------------------------------------

def test_second_prepare_loads_identical_weights_from_the_cache(pggan, cache, prepared):
    steps = []
    again = I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=cache,
                                                     progress=lambda i, n: steps.append((i, n)))
    assert again.from_cache_ and not steps  # loaded, not trained (both methods share the file)
    assert torch.equal(again.weights_, prepared.weights_)
    assert again.prepared_state() == prepared.prepared_state()
    json.dumps(prepared.prepared_state())
    assert cache_file(cache, prepared).is_file()


def test_other_generator_content_or_settings_retrain(pggan, cache, prepared):
    other = copy.deepcopy(pggan)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # same name and description, other weights
    steps = []
    m = I.IDEncoder.from_profile("test").prepare(other, seed=0, cache_dir=cache,
                                                 progress=lambda i, n: steps.append((i, n)))
    assert not m.from_cache_ and m.cache_key_ != prepared.cache_key_
    assert steps[-1] == (m.settings.encoder_steps, m.settings.encoder_steps) and len(steps) == m.settings.encoder_steps
    wider = I.IDEncoder.from_profile("test", encoder_width=4).prepare(pggan, seed=0, cache_dir=cache)
    assert not wider.from_cache_ and wider.cache_key_ != prepared.cache_key_
    reseeded = I.IDEncoder.from_profile("test").prepare(pggan, seed=1, cache_dir=cache)
    assert not reseeded.from_cache_ and not torch.equal(reseeded.weights_, prepared.weights_)


def test_cache_file_trained_for_other_content_is_refused(pggan, tmp_path, prepared):
    fresh = I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=tmp_path)
    path = cache_file(tmp_path, fresh)
    planted = torch.load(path, weights_only=True)
    key = json.loads(planted["key"])
    key["weights_sha256"] = "0" * 64  # someone else's generator
    planted["key"], planted["weights"] = json.dumps(key), torch.zeros_like(planted["weights"])
    torch.save(planted, path)
    with pytest.warns(UserWarning, match=r"refusing encoder cache file .*differs in: weights_sha256.*retraining"):
        m = I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=tmp_path)
    assert not m.from_cache_ and torch.equal(m.weights_, prepared.weights_)
    assert I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=tmp_path).from_cache_  # rewritten


class NotATensor:
    pass


def test_unreadable_or_unsafe_cache_file_is_retrained_over(pggan, tmp_path, prepared):
    fresh = I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=tmp_path)
    path = cache_file(tmp_path, fresh)
    torch.save({"weights": NotATensor(), "key": "x"}, path)  # not loadable with weights_only=True
    with pytest.warns(UserWarning, match="unreadable encoder cache file"):
        m = I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=tmp_path)
    assert not m.from_cache_ and torch.equal(m.weights_, prepared.weights_)
    with pytest.raises(ValueError, match=r"cache folder .* is a file"):
        I.IDEncoder.from_profile("test").prepare(pggan, seed=0, cache_dir=path)


# ---- determinism and the encoder alone ------------------------------------------------------------------

def test_encoder_training_and_inversion_are_deterministic(pggan, prepared):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = I.IDEncoder.from_profile("test").prepare(pggan, seed=0)  # no cache: trained again
    assert not again.from_cache_ and torch.equal(again.weights_, prepared.weights_)
    assert again.curve_ == prepared.curve_
    x = targets_of(pggan, [3, 4])
    a, b = again.invert(pggan, x, seeds=[1, 2]), again.invert(pggan, x, seeds=[7, 8])
    assert torch.equal(a.reconstructions, b.reconstructions) and a.iterations == 0
    alone = again.invert(pggan, x[1:], seeds=[2])
    torch.testing.assert_close(alone.reconstructions[0], a.reconstructions[1], rtol=1e-4, atol=1e-5)


def test_encoder_result_and_loss_by_hand(pggan, prepared):
    enc = I.IDEncoder.from_profile("test").prepare(pggan, seed=0)
    x = targets_of(pggan, [5, 6])
    r = enc.invert(pggan, x, seeds=0)
    E = I.build_encoder(enc.arch_, enc.weights_)
    with torch.no_grad():
        z = E(x)
        images = pggan(z)
    torch.testing.assert_close(r.latents["z"], z)
    torch.testing.assert_close(r.reconstructions, images)
    mse = [((images[i] - x[i]) ** 2).mean() for i in range(2)]  # perceptual_weight is 0 in the test profile
    assert r.loss_history.shape == (1, 2)
    torch.testing.assert_close(r.loss_history[0], torch.stack(mse))


def test_encoder_keeps_each_images_class():
    G = GENERATORS.create("biggan-deep", tiny=True).eval()
    enc = I.IDEncoder.from_profile("test").prepare(G, seed=0)
    classes = G.sample_conditions(2, seed=[11, 12])
    with torch.no_grad(), conditioned(G, classes):
        x = G(G.sample_latents(2, seed=[1, 2])).clamp(-1, 1)
    with conditioned(G, classes):
        r = enc.invert(G, x, seeds=0)
        with torch.no_grad():
            again = G(r.latents["z"])
    assert r.latents["z"].shape == (2, G.latent_dim)
    torch.testing.assert_close(r.reconstructions, again)
    assert G.conditions is None


# ---- eq. 4 --------------------------------------------------------------------------------------------

def test_domain_regulariser_by_hand(pggan, prepared):
    E = I.build_encoder(prepared.arch_, prepared.weights_)
    z = pggan.sample_latents(2, seed=[8, 9])
    with torch.no_grad():
        images = pggan(z)
        e = E(images)
        got = I.domain_regulariser(E, z, images)
    d = z.shape[1]
    want = torch.tensor([sum(float(z[i, j] - e[i, j]) ** 2 for j in range(d)) / d for i in range(2)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_first_loss_is_eq4_at_the_encoders_code(pggan, prepared):
    m = prepared.with_settings(domain_weight=0.7)
    x = targets_of(pggan, [21, 22])
    r = m.with_budget(1).invert(pggan, x, seeds=0)
    E = I.build_encoder(prepared.arch_, prepared.weights_)
    with torch.no_grad():
        z0 = E(x)
        g = pggan(z0)
        e = E(g)
    torch.testing.assert_close(r.info["encoder_z"], z0)
    want = ((g - x) ** 2).flatten(1).mean(1) + 0.7 * ((z0 - e) ** 2).mean(1)
    torch.testing.assert_close(r.loss_history[0], want, rtol=1e-5, atol=1e-6)


def test_idinvert_improves_over_the_encoder_alone(pggan, prepared):
    x = targets_of(pggan, [31, 32])
    alone = I.IDEncoder.from_profile("test").prepare(pggan, seed=0).invert(pggan, x)
    # the paper's λ_dom; 60 iterations: at 30 the ratio was 0.74 with 2 threads and 0.80 with 1 (the
    # 12-step encoder trains differently), so the 0.8 margin depended on the thread count; at 60: 0.60-0.68
    hybrid = prepared.with_settings(domain_weight=2.0).with_budget(60).invert(pggan, x)
    mse_alone = ((alone.reconstructions - x) ** 2).flatten(1).mean(1)
    mse_hybrid = ((hybrid.reconstructions - x) ** 2).flatten(1).mean(1)
    assert (mse_hybrid < 0.8 * mse_alone).all(), (mse_alone, mse_hybrid)
    assert hybrid.latents["z"].shape == (2, pggan.latent_dim) and hybrid.iterations == 60


def test_perceptual_term_path(pggan, prepared):
    x = targets_of(pggan, [41])
    r = prepared.with_settings(perceptual_weight=5e-5).with_budget(2).invert(pggan, x)
    assert r.loss_history.shape == (2, 1) and torch.isfinite(r.loss_history).all()


# ---- bad paths -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    ({"encoder_steps": 0}, "encoder_steps"), ({"encoder_batch": -1}, "encoder_batch"),
    ({"encoder_lr": 0.0}, "encoder_lr"), ({"encoder_width": 64, "encoder_max_width": 32}, "encoder_max_width"),
    ({"encoder_latent_weight": -1.0}, "encoder_latent_weight"), ({"perceptual_weight": float("nan")}, "perceptual"),
    ({"perceptual_size": 0}, "perceptual_size"), ({"domain_weight": -2.0}, "domain_weight"),
    ({"iterations": 0}, "iterations"), ({"lr": float("inf")}, "lr"),
])
def test_impossible_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        I.IDInvert(**bad)


def test_invert_needs_prepare_for_this_generator(pggan, prepared):
    x = targets_of(pggan, [1])
    with pytest.raises(ValueError, match="prepare"):
        I.IDInvert.from_profile("test").invert(pggan, x)
    other = GENERATORS.create("stylegan2", tiny=True).eval()
    with pytest.raises(ValueError, match="prepare"):
        prepared.invert(other, targets_of(other, [1]))
    with pytest.raises(ValueError, match="budget"):
        METHODS.get("encoder").from_profile("test").with_budget(3)
