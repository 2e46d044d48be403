"""PmSFC: stage 1 (self-expressive layer, affinities, clustering, cache, S import) and stage 2
(paper eq. (7) and the released composition), against explicit loop implementations and
hand-computed values. Tiny generators, few iterations."""
from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.methods import pmsfc as P
from gan_inversion_bench.methods import pmsfc_subspaces as S1
from gan_inversion_bench.weights import CheckpointError

FAST = {"discovery_iterations": 20, "codes_per_subspace": 2, "iterations": 3}


@pytest.fixture(scope="module")
def pggan():
    return GENERATORS.create("pggan-tiny")


@pytest.fixture(scope="module")
def dcgan():
    return GENERATORS.create("dcgan-digiface64", tiny=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(pggan, cache):
    return P.PmSFC.from_profile("quick", **FAST).prepare(pggan, seed=0, cache_dir=cache)


def targets_of(G, seeds):
    with torch.no_grad():
        return G(G.sample_latents(len(seeds), seed=seeds)).clamp(-1, 1)


# ---- compositions against explicit loops ---------------------------------------------------------

def test_compose_paper_matches_explicit_loop():
    g = torch.Generator().manual_seed(0)
    B, R, K, C, H, W = 2, 3, 4, 5, 2, 3
    feats = torch.randn(B, R, K, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(B, R, K, C, generator=g, dtype=torch.float64) + 1.0
    labels = torch.tensor([2, 0, 1, 0, 2])
    masks = S1.masks_from_labels(labels, R)
    got = P.compose_paper(feats, w, masks, eps=1e-3)
    want = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        for r in range(R):
            for c in range(C):
                num, den = 0.0, 0.0
                for k in range(K):
                    t = float(np.tanh(w[b, r, k, c].item()))
                    num = num + float(masks[r, c]) * feats[b, r, k, c] * t
                    den += t
                den = max(den, 1e-3) if den >= 0 else min(den, -1e-3)
                want[b, c] += num / den
    torch.testing.assert_close(got, want)


def test_compose_released_matches_explicit_loop():
    g = torch.Generator().manual_seed(1)
    B, R, Pc, C, H, W = 2, 3, 2, 6, 2, 2
    feats = torch.randn(B, R, Pc, C, H, W, generator=g, dtype=torch.float64)
    base = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    masks = S1.masks_from_labels(torch.tensor([0, 1, 2, 2, 1, 0]), R)
    want = base.clone()
    for b in range(B):
        for t in range(R * Pc):  # the official flat code index t, subspace t // P
            r, p = divmod(t, Pc)
            want[b] += feats[b, r, p] * masks[r].double()[:, None, None]
    torch.testing.assert_close(P.compose_released(feats, base, masks), want)


def test_denominator_guard_keeps_sign_and_finite_gradients():
    d = torch.tensor([0.0, 1e-5, -1e-5, 0.5, -0.5])
    torch.testing.assert_close(P.safe_denominator(d, 1e-3), torch.tensor([1e-3, 1e-3, -1e-3, 0.5, -0.5]))
    # two codes whose tanh weights cancel exactly: Σ_k tanh(w_k) = 0
    w = torch.tensor([0.7, -0.7]).view(1, 1, 2, 1).repeat(1, 1, 1, 3).requires_grad_(True)
    feats = torch.randn(1, 1, 2, 3, 2, 2)
    out = P.compose_paper(feats, w, torch.ones(1, 3, dtype=torch.bool), eps=1e-3)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(w.grad).all()


# ---- stage 2 end to end: batched G1 = per-code loop -------------------------------------------------

def explicit_first_loss_paper(method, G, x, seed):
    """The loss at iteration 0, recomputed with one G1 call per code and the explicit formula."""
    s = method.settings
    R, K = s.n_subspaces, s.codes_per_subspace
    split = method.split_["index"]
    z = G.sample_latents(R * K, seed=P.code_seeds([seed], R * K, "codes"))
    f = torch.zeros(G.split_points[split].shape)
    t = float(np.tanh(s.weight_init))
    with torch.no_grad():
        for r in range(R):
            m = method.masks_[r].float()[:, None, None]
            f += sum(m * G.g1(z[r * K + k:r * K + k + 1], split)[0] * t for k in range(K)) / (K * t)
        img = G.g2(f[None], split)
    from gan_inversion_bench.losses import ReconstructionLoss

    loss = ReconstructionLoss(x, perceptual_weight=s.perceptual_weight,
                              perceptual_size=s.perceptual_size or G.resolution)
    return loss(img)


def test_paper_variant_batched_g1_equals_per_code_loop(prepared, pggan, cache):
    x = targets_of(pggan, [11])
    m = P.PmSFC.from_profile("quick", **{**FAST, "iterations": 1}).prepare(pggan, seed=0, cache_dir=cache)
    assert m.from_cache_
    result = m.invert(pggan, x, seeds=[4])
    torch.testing.assert_close(result.loss_history[0], explicit_first_loss_paper(m, pggan, x, 4), rtol=1e-4,
                               atol=1e-6)


def test_released_variant_batched_g1_equals_per_code_loop(prepared, pggan, cache):
    m = P.PmSFC.from_profile("quick", **{**FAST, "iterations": 1}, variant="released", init="normal", lr=1e-4)
    m.prepare(pggan, seed=0, cache_dir=cache)
    x = targets_of(pggan, [12])
    split, R, Pc = m.split_["index"], m.settings.n_subspaces, m.settings.codes_per_subspace
    z = pggan.sample_latents(R * Pc, seed=P.code_seeds([5], R * Pc, "codes"))
    zb = pggan.sample_latents(1, seed=P.code_seeds([5], 1, "base"))
    with torch.no_grad():
        base = pggan.g1(zb, split)[0]
        f = base.clone()
        for t in range(R * Pc):
            f += pggan.g1(z[t:t + 1], split)[0] * m.masks_[t // Pc].float()[:, None, None]
        want = (0.01 * (pggan.g2(f[None], split) - x).square().mean()
                + (pggan.g2(base[None], split) - x).square().mean())
    result = m.invert(pggan, x, seeds=[5])
    torch.testing.assert_close(result.loss_history[0, 0], want, rtol=1e-4, atol=1e-7)
    assert result.info["base_reconstructions"].shape == x.shape


def pggan_with_biases(pggan):
    """pggan-tiny with small random biases, like a trained PGGAN.

    With the all-zero biases of the random tiny model, z = 0 gives exact zeros at *every*
    PixelNorm, each multiplies the gradient by 1/√1e-8 = 1e4, the gradient reaches ~1e29 and
    Adam's second moment overflows float32 (step = g/∞ = 0). In a trained PGGAN only the first
    PixelNorm sees zeros (the conv biases make later activations non-zero)."""
    G = copy.deepcopy(pggan)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("wscale.bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    G.weights_source = "random:0+biases"
    return G


def test_released_zero_init_first_adam_step_on_pggan(pggan, cache):
    """PixelNorm (eps 1e-8) turns the zero init into ±lr codes and ±0.707 inputs (seed-methods §5.4)."""
    G = pggan_with_biases(pggan)
    lr = 1e-4
    m = P.PmSFC(**{**FAST, "iterations": 1}, variant="released", lr=lr).prepare(G, seed=0, cache_dir=cache)
    assert m.settings.init == "zero" and m.settings.optimizer == "adam"
    split = m.split_["index"]
    result = m.invert(G, targets_of(G, [3]), seeds=[0])
    z = torch.cat([result.latents["z"].reshape(-1, G.latent_dim), result.latents["z_base"]])
    torch.testing.assert_close(z.abs(), torch.full_like(z, lr), rtol=1e-3, atol=0)
    with torch.no_grad():
        zero = torch.zeros(1, G.latent_dim)
        assert G.layer0.norm(zero[:, :, None, None]).abs().max() == 0
        normed = G.layer0.norm(z[:, :, None, None])
        torch.testing.assert_close(normed.abs(), torch.full_like(normed, 0.5 ** 0.5), rtol=1e-3, atol=0)
        before, after = G.g1(zero, split), G.g1(z, split)
    assert (after - before).abs().mean() > 0.1 * before.abs().mean()
    assert after.abs().mean() > 0


def test_zero_init_dead_point_on_dcgan_is_reported(pggan, tmp_path):
    """On the real DCGAN, z = 0 switches every ReLU after the first BatchNorm off: no gradient."""
    assert not P.zero_codes_are_stuck(pggan_with_biases(pggan), 3)
    try:
        G = GENERATORS.create("dcgan-digiface64")
    except Exception as e:  # noqa: BLE001 - weights package missing (whatever it raises)
        pytest.skip(str(e))
    assert P.zero_codes_are_stuck(G, 3)
    m = P.PmSFC(**{**FAST, "iterations": 1}, variant="released").prepare(G, seed=0, cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="init='normal'"):
        m.invert(G, targets_of(G, [1]), seeds=[0])


def test_zero_init_overflow_on_zero_bias_pggan_is_refused(pggan, tmp_path):
    """PGGAN's own random init (biases 0) maps z = 0 to zeros at every PixelNorm: the gradient at
    z = 0 overflows (found on an H200 with PGGAN-256, where every image failed at iteration 1).
    The released variant's zero init is refused with the reason before any step; with biases, or
    with init='normal', it runs."""
    assert P.zero_init_problem(pggan, 3) == "non-finite"
    assert P.zero_init_problem(pggan_with_biases(pggan), 3) is None
    m = P.PmSFC(**{**FAST, "iterations": 1}, variant="released").prepare(pggan, seed=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="init='normal'"):
        m.invert(pggan, targets_of(pggan, [1]), seeds=[0])
    m.settings.init = "normal"
    result = m.invert(pggan, targets_of(pggan, [1]), seeds=[0])
    assert torch.isfinite(result.loss_history).all()


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_loss_decreases_in_domain(variant, dcgan, tmp_path):
    extra = {"lr": 0.05} if variant == "released" else {}
    m = P.PmSFC.from_profile("quick", **{**FAST, "iterations": 15}, variant=variant, **extra)
    m.prepare(dcgan, seed=0, cache_dir=tmp_path)
    r = m.invert(dcgan, targets_of(dcgan, [7, 8]), seeds=[1, 2])
    assert (r.loss_history[-1] < r.loss_history[0]).all()
    assert r.info["variant"] == variant and m.get_settings()["variant"] == variant


# ---- stage 1 ---------------------------------------------------------------------------------------

def test_masks_partition_channels_and_are_sorted_by_size(prepared, pggan):
    C = pggan.split_points[3].shape[0]
    assert prepared.split_["index"] == 3  # the seeds' ℓ = 3 on PGGAN
    assert prepared.masks_.shape == (6, C) and prepared.masks_.dtype == torch.bool
    assert torch.equal(prepared.masks_.sum(0), torch.ones(C, dtype=torch.long))
    sizes = prepared.masks_.sum(1)
    assert (sizes[:-1] >= sizes[1:]).all()
    assert torch.equal(prepared.masks_.float().argmax(0), prepared.labels_)
    state = prepared.prepared_state()
    json.dumps(state)
    assert state["cluster_sizes"] == sizes.tolist() and state["affinity"] == "paper"
    assert state["discovery_iterations"] == FAST["discovery_iterations"]
    assert set(state["final_losses"]) == {"total", "feature", "data", "sparse"}


def test_diagonal_is_zero_in_every_use(prepared):
    S = prepared.S_
    assert torch.all(S.diag() == 1e-4), "the diagonal never receives a gradient, so it keeps its init"
    F = torch.randn(2, S.shape[0], 3, 3)
    torch.testing.assert_close(S1.self_expression(S, F), S1.self_expression(S1.masked(S), F))
    S_diag_only = torch.diag(torch.full((S.shape[0],), 5.0))
    assert S1.self_expression(S_diag_only, F).abs().max() == 0
    assert np.all(np.diag(S1.paper_affinity(S)) == 0)


def test_discovery_gradient_ignores_the_diagonal(pggan):
    G = pggan
    S = torch.full((32, 32), 1e-4, requires_grad=True)
    terms = S1.discovery_losses(G, 3, S, G.sample_latents(2, seed=0), data_weight=1.0)
    (terms["feature"] + terms["data"] + terms["sparse"]).backward()
    assert torch.all(S.grad.diag() == 0) and S.grad.abs().sum() > 0


def test_spectral_clustering_is_seeded(prepared):
    A = S1.paper_affinity(prepared.S_)
    a, _ = S1.spectral_labels(A, 6, seed=3, assign_labels="kmeans")
    b, _ = S1.spectral_labels(A, 6, seed=3, assign_labels="kmeans")
    assert np.array_equal(a, b)
    c, _ = S1.spectral_labels(A, 6, seed=3, assign_labels="discretize")
    d, _ = S1.spectral_labels(A, 6, seed=3, assign_labels="discretize")
    assert np.array_equal(c, d)


def test_threshold_columns_hand_example():
    C = np.array([[0.5, 0.0, 1.0, 0.0],
                  [-0.3, 0.0, 1.0, 0.1],
                  [0.1, 0.0, 1.0, -0.2],
                  [0.1, 0.0, 1.0, 0.7]])
    # ratio 0.6: column 0 mass 1.0 → keep 0.5, then -0.3 crosses 0.6 → kept, rest zeroed;
    # column 1 all zero stays zero; column 2 (ties, mass 4) keeps the first 3 rows (3 > 2.4);
    # column 3 mass 1.0 → 0.7 crosses 0.6 alone.
    want = np.array([[0.5, 0.0, 1.0, 0.0],
                     [-0.3, 0.0, 1.0, 0.0],
                     [0.0, 0.0, 1.0, 0.0],
                     [0.0, 0.0, 0.0, 0.7]])
    np.testing.assert_array_equal(S1.threshold_columns(C, 0.6), want)
    np.testing.assert_array_equal(S1.threshold_columns(C, 1.0), C)


def test_official_threshold_orientations_hand_example():
    S = np.array([[1e-4, 0.5, -0.9],
                  [0.2, 1e-4, 0.1],
                  [0.05, 0.6, 1e-4]])
    # PmSFC.py: signed, diagonal kept, per column, ratio 0.2
    np.testing.assert_allclose(S1.official_threshold(S, 0.2, "inversion"),
                               [[0, 0, -0.9], [0.2, 0, 0], [0, 0.6, 0]])
    # discover_subspace.py: ReLU of the masked S, per row
    np.testing.assert_allclose(S1.official_threshold(S, 0.2, "discovery"),
                               [[0, 0.5, 0], [0.2, 0, 0], [0, 0.6, 0]])


def test_official_affinity_hand_example():
    """Two rank-one blocks (eigenvalues 4 and 3): U√σ rows normalise to e1 / e2, so the
    affinity is exactly the block indicator; with ratio 1 nothing is thresholded."""
    C = np.zeros((5, 5))
    C[:2, :2] = 2.0
    C[2:, 2:] = 1.0
    want = np.zeros((5, 5))
    want[:2, :2] = 1.0
    want[2:, 2:] = 1.0
    L = S1.official_affinity(C, n_subspaces=2, subspace_dim=1, power=2.0, ratio=1.0, orientation="inversion")
    np.testing.assert_allclose(L, want, atol=1e-12)
    labels, _ = S1.spectral_labels(L, 2, seed=0, assign_labels="discretize")
    assert labels.tolist() == [1, 1, 0, 0, 0]  # the larger cluster is subspace 0


def test_official_affinity_option_records_variant(pggan, cache):
    m = P.PmSFC(**FAST, affinity="official", official_orientation="discovery")
    m.prepare(pggan, seed=0, cache_dir=cache)
    assert m.prepared_state()["affinity"] == "official-discovery"
    assert torch.equal(m.masks_.sum(0), torch.ones(32, dtype=torch.long))


# ---- cache and S import ----------------------------------------------------------------------------

def test_second_prepare_reuses_the_cache(pggan, tmp_path, monkeypatch):
    first = P.PmSFC(**FAST).prepare(pggan, seed=0, cache_dir=tmp_path)
    assert not first.from_cache_
    assert any(p.name.startswith("pmsfc-S-") for p in tmp_path.iterdir())

    def no_training(*a, **k):
        raise AssertionError("prepare retrained S although it was cached")

    from gan_inversion_bench.methods import pmsfc_subspaces

    monkeypatch.setattr(pmsfc_subspaces, "train_self_expressive", no_training)
    second = P.PmSFC(**FAST).prepare(pggan, seed=0, cache_dir=tmp_path)
    assert second.from_cache_
    assert torch.equal(first.S_, second.S_) and torch.equal(first.masks_, second.masks_)
    assert first.prepared_state() == second.prepared_state()
    # the environment variable is the default cache location
    monkeypatch.setenv("GIB_CACHE", str(tmp_path))
    assert P.PmSFC(**FAST).prepare(pggan, seed=0).from_cache_
    # another seed or other discovery settings are another key
    with pytest.raises(AssertionError, match="retrained"):
        P.PmSFC(**FAST).prepare(pggan, seed=1, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="retrained"):
        P.PmSFC(**{**FAST, "sparsity_weight": 0.5}).prepare(pggan, seed=0, cache_dir=tmp_path)
    # clustering settings alone do not retrain S
    assert P.PmSFC(**FAST, n_subspaces=3).prepare(pggan, seed=0, cache_dir=tmp_path).masks_.shape[0] == 3


def test_imported_s_matrix(pggan, tmp_path):
    S = np.random.default_rng(0).normal(scale=1e-3, size=(32, 32)).astype(np.float32)
    np.fill_diagonal(S, 1e-4)
    path = tmp_path / "value50.pkl"
    path.write_bytes(pickle.dumps(S, protocol=3))
    m = P.PmSFC(**FAST, s_matrix=str(path), affinity="official").prepare(pggan, seed=0, cache_dir=tmp_path)
    assert torch.equal(m.S_, torch.from_numpy(S))
    assert m.loss_curves_ == {} and m.prepared_state()["s_source"].startswith("imported")
    assert m.prepared_state()["discovery_iterations"] == 0

    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps(np.zeros((16, 16), np.float32), protocol=3))
    with pytest.raises(CheckpointError, match=r"\(32, 32\)"):
        P.PmSFC(**FAST, s_matrix=str(wrong)).prepare(pggan, seed=0)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_code_executing_pickle_is_refused(pggan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="refusing"):
        P.PmSFC(**FAST, s_matrix=str(path)).prepare(pggan, seed=0)
    assert not (tmp_path / "pwned-by-pickle").exists()


# ---- settings -------------------------------------------------------------------------------------

def test_variant_defaults_are_filled_in():
    paper, released = P.PmSFC(), P.PmSFC(variant="released")
    assert (paper.settings.codes_per_subspace, paper.settings.iterations, paper.settings.optimizer,
            paper.settings.lr, paper.settings.init) == (5, 3000, "sgd", 1.0, "normal")
    assert (released.settings.codes_per_subspace, released.settings.iterations, released.settings.optimizer,
            released.settings.lr, released.settings.init) == (1, 20000, "adam", 1e-4, "zero")
    assert P.PmSFC(variant="released", lr=0.01).settings.lr == 0.01
    assert METHODS.get("pmsfc") is P.PmSFC


@pytest.mark.parametrize("bad, name", [
    ({"n_subspaces": 0}, "n_subspaces"), ({"codes_per_subspace": 0}, "codes_per_subspace"),
    ({"variant": "eq7"}, "variant"), ({"affinity": "cosine"}, "affinity"), ({"split": -1}, "split"),
    ({"official_orientation": "rows"}, "official_orientation"), ({"threshold_ratio": 1.5}, "threshold_ratio"),
    ({"discovery_iterations": 0}, "discovery_iterations"), ({"weight_init": -1.0}, "weight_init"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"data_weight": -1}, "data_weight"),
])
def test_invalid_settings_name_the_setting(bad, name):
    with pytest.raises(ValueError, match=name):
        P.PmSFC(**bad)


def test_invalid_against_the_generator(pggan):
    with pytest.raises(ValueError, match="n_subspaces"):
        P.PmSFC(**FAST, n_subspaces=33).prepare(pggan, seed=0)
    with pytest.raises(ValueError, match="split"):
        P.PmSFC(**FAST, split=99).prepare(pggan, seed=0)
    with pytest.raises(ValueError, match="prepare"):
        P.PmSFC(**FAST).invert(pggan, targets_of(pggan, [1]), seeds=0)


def test_default_split_per_generator(pggan, dcgan):
    assert P.default_split(pggan) == 3
    assert P.default_split(dcgan) == P.DEFAULT_SPLITS["dcgan-digiface64"]


def test_random_partition_keeps_the_subspace_sizes_and_moves_the_channels(pggan, tmp_path):
    discovered = P.PmSFC(**FAST).prepare(pggan, seed=0, cache_dir=tmp_path)
    shuffled = P.PmSFC(**FAST, partition="random").prepare(pggan, seed=0, cache_dir=tmp_path)
    again = P.PmSFC(**FAST, partition="random").prepare(pggan, seed=0, cache_dir=tmp_path)
    assert shuffled.masks_.sum(1).tolist() == discovered.masks_.sum(1).tolist()
    assert (shuffled.masks_.sum(0) == 1).all()  # still a partition of the channels
    assert not torch.equal(shuffled.masks_, discovered.masks_) and torch.equal(shuffled.masks_, again.masks_)
    assert torch.equal(shuffled.S_, discovered.S_)  # the same stage 1, only the assignment differs
    # "random:N": another draw of the same sizes, from seed N; the run's seed (0) gives "random" again
    other = P.PmSFC(**FAST, partition="random:1").prepare(pggan, seed=0, cache_dir=tmp_path)
    same = P.PmSFC(**FAST, partition="random:0").prepare(pggan, seed=0, cache_dir=tmp_path)
    assert other.masks_.sum(1).tolist() == discovered.masks_.sum(1).tolist() and (other.masks_.sum(0) == 1).all()
    assert not torch.equal(other.masks_, shuffled.masks_) and torch.equal(same.masks_, shuffled.masks_)
    for bad in ("shuffled", "random:", "random:-1", "random:x", "random:1:2", "random:" + "9" * 10):
        with pytest.raises(ValueError, match="partition must be 'discovered', 'random' or 'random:N' \\(N a seed\\): "):
            P.PmSFC(partition=bad)


def test_a_cache_path_that_is_a_file_is_refused(pggan, tmp_path, monkeypatch):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        P.PmSFC(**FAST).prepare(pggan, seed=0, cache_dir=f)
    monkeypatch.setenv("GIB_CACHE", str(f))
    with pytest.raises(ValueError, match="GIB_CACHE"):
        P.PmSFC(**FAST).prepare(pggan, seed=0)
    assert f.read_text() == "x"
