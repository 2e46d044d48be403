"""mGANprior: the composition against an explicit loop, batched G1 against one call per code,
structured intermediates, the official /N, defaults and validation. Tiny generators."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.generator import SplitGenerator, SplitState
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.methods import mganprior as M


@pytest.fixture(scope="module")
def pggan():
    return GENERATORS.create("pggan-tiny")


@pytest.fixture(scope="module")
def dcgan():
    return GENERATORS.create("dcgan-digiface64", tiny=True)


def targets_of(G, seeds):
    with torch.no_grad():
        return G(G.sample_latents(len(seeds), seed=seeds)).clamp(-1, 1)


def test_compose_matches_explicit_loop_with_official_division_by_n():
    g = torch.Generator().manual_seed(0)
    B, N, C, H, W = 2, 3, 4, 2, 3
    feats = torch.randn(B, N, C, H, W, generator=g, dtype=torch.float64)
    alpha = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    want = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            for c in range(C):
                want[b, c] += feats[b, n, c] * alpha[b, n, c]
    torch.testing.assert_close(M.compose(feats, alpha), want / N)


@pytest.mark.parametrize("name", ["pggan", "dcgan"])
def test_batched_g1_equals_per_code_loop(name, request):
    G = request.getfixturevalue(name)
    split = M.MGANPrior().resolved_split(G)
    z = torch.randn(2, 5, G.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, batched = M.g1_codes(G, z, split)
        for b in range(2):
            for n in range(5):
                torch.testing.assert_close(batched[b, n], G.g1(z[b, n:n + 1], split)[0], rtol=1e-4, atol=1e-5)


def test_first_loss_matches_explicit_composition(pggan):
    """Iteration 0 of invert = G2(Σ_n G1(z_n)·(1/N)/N) with one G1 call per code."""
    x = targets_of(pggan, [21, 22])
    m = M.MGANPrior.from_profile("quick", n_codes=4, iterations=1)
    result = m.invert(pggan, x, seeds=[3, 4])
    split = m.resolved_split(pggan)
    losses = []
    with torch.no_grad():
        for i, seed in enumerate([3, 4]):
            z = M.sample_codes(pggan, [seed], 4)[0]
            f = sum(pggan.g1(z[n:n + 1], split) * (1 / 4) for n in range(4)) / 4
            loss = ReconstructionLoss(x[i:i + 1], perceptual_size=pggan.resolution)
            losses.append(loss(pggan.g2(f, split))[0])
    torch.testing.assert_close(result.loss_history[0], torch.stack(losses), rtol=1e-4, atol=1e-6)
    assert result.latents["z"].shape == (2, 4, pggan.latent_dim)
    assert result.latents["alpha"].shape == (2, 4, pggan.split_points[split].shape[0])
    assert result.info["split"] == split == 6


class ToyStateGenerator(SplitGenerator):
    """Two stages with a SplitState: features ``[B, 4, 2, 2]`` and a per-row context ``offset``."""

    latent_dim, resolution, name = 4, 4, "toy-state"

    def latent_to_input(self, z):
        feats = z[:, :, None, None].expand(-1, -1, 2, 2)  # [B, 4, 2, 2]
        return SplitState(feats, {"offset": z[:, :1].tanh()})

    def stages(self):
        def double(s):
            return SplitState(s.features * 0.5, s.context)

        def to_image(s):
            img = F.interpolate(s.features[:, :3].tanh(), scale_factor=2)  # [B, 3, 4, 4]
            return img * 0.5 + s.context["offset"][:, :, None, None] * 0.5

        return [("half", double), ("image", to_image)]


def test_structured_intermediate_uses_the_first_code_context():
    G = ToyStateGenerator()
    x = torch.zeros(1, 3, 4, 4)
    m = M.MGANPrior(n_codes=3, split=1, iterations=1, perceptual_weight=0.0)
    result = m.invert(G, x, seeds=[5])
    z = M.sample_codes(G, [5], 3)[0]  # [3, 4]
    with torch.no_grad():
        feats = torch.stack([G.g1(z[n:n + 1], 1).features[0] for n in range(3)])  # [3, 4, 2, 2]
        f = (feats * (1 / 3)).sum(0, keepdim=True) / 3
        img = G.g2(SplitState(f, {"offset": z[:1, :1].tanh()}), 1)  # context of code 0
    torch.testing.assert_close(result.loss_history[0, 0], img.square().mean())


def test_division_by_n_is_inert_on_pggan_but_not_on_dcgan(pggan, dcgan):
    """G2 of PGGAN starts with PixelNorm, so a global scale of f does not change the image."""
    for G, inert in ((pggan, True), (dcgan, False)):
        split = M.MGANPrior().resolved_split(G)
        with torch.no_grad():
            f = G.g1(G.sample_latents(2, seed=0), split)
            a, b = G.g2(f, split), G.g2(f / 30, split)
        assert torch.allclose(a, b, atol=1e-4) == inert


@pytest.mark.parametrize("name", ["pggan", "dcgan"])
def test_loss_decreases_in_domain(name, request):
    G = request.getfixturevalue(name)
    r = M.MGANPrior.from_profile("quick", n_codes=4, iterations=15).invert(G, targets_of(G, [7, 8]), seeds=[1, 2])
    assert (r.loss_history[-1] < r.loss_history[0]).all()


def test_defaults_are_the_official_code():
    s = M.MGANPrior().settings
    assert (s.n_codes, s.split, s.iterations, s.optimizer, s.lr, s.mse_weight, s.perceptual_weight,
            s.perceptual_size) == (30, None, 3000, "sgd", 1.0, 1.0, 0.001, 256)
    assert METHODS.get("mganprior") is M.MGANPrior
    assert M.MGANPrior.from_profile("paper").get_settings() == M.MGANPrior().get_settings()


def test_default_split_per_generator(pggan, dcgan):
    assert M.MGANPrior().resolved_split(pggan) == 6  # the official ℓ
    assert M.MGANPrior().resolved_split(dcgan) == M.DEFAULT_SPLITS["dcgan-digiface64"]
    other = copy.deepcopy(dcgan)
    other.name = "some-other-dcgan"  # no table entry: deepest split at 1/8 of the resolution
    assert other.split_points[M.MGANPrior().resolved_split(other)].name == "8x8.relu"
    assert M.MGANPrior(split="16x16.relu").resolved_split(dcgan) == 9


def test_prepared_state_records_the_split(dcgan):
    state = M.MGANPrior().prepare(dcgan).prepared_state()
    json.dumps(state)
    assert state["split"]["index"] == M.DEFAULT_SPLITS["dcgan-digiface64"]
    assert state["split"]["shape"] == list(dcgan.split_points[state["split"]["index"]].shape)


@pytest.mark.parametrize("bad, name", [
    ({"n_codes": 0}, "n_codes"), ({"n_codes": 2.5}, "n_codes"), ({"split": -1}, "split"), ({"split": True}, "split"),
    ({"optimizer": "lbfgs"}, "optimiser"), ({"perceptual_size": 0}, "perceptual_size"), ({"lr": 0}, "lr"),
    ({"mse_weight": 0, "perceptual_weight": 0}, "weights"),
])
def test_invalid_settings_name_the_setting(bad, name):
    with pytest.raises(ValueError, match=name):
        M.MGANPrior(**bad)


def test_split_out_of_range(pggan):
    with pytest.raises(ValueError, match="split"):
        M.MGANPrior(split=99, iterations=1).invert(pggan, targets_of(pggan, [1]), seeds=0)
    with pytest.raises(ValueError, match="split"):
        M.MGANPrior(split="no-such-layer").prepare(pggan)
