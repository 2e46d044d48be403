"""CMA-ES over the latent: against the ``cma`` library driven directly (a plain ask-tell loop),
the tutorial's defaults computed by hand, batch against each image alone (with per-image class
conditions), best-so-far bookkeeping, non-finite losses, the library's own termination, no
autograd, no global state, and refused settings. Tiny generators and a toy generator."""
from __future__ import annotations

import math

import cma
import numpy as np
import pytest
import torch
from torch import nn

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.generator import SplitGenerator, conditioned
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionFailed
from gan_inversion_bench.method_tools import code_seeds, tracing
from gan_inversion_bench.methods import cmaes as C


class Toy(SplitGenerator):
    """A 4-dim latent, 4×4 images: ``tanh(z W)``; ``mode`` "nan-half" gives NaN images for
    z[0] > 0, "nan" always NaN, "flat" a constant image (every candidate has the same loss)."""

    latent_dim, resolution, name = 4, 4, "toy"

    def __init__(self, mode: str = ""):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 48, generator=torch.Generator().manual_seed(0)))
        self.mode = mode

    def stages(self):
        return [("out", self._out)]

    def _out(self, z):
        x = torch.tanh(z @ self.w).view(-1, 3, 4, 4)
        if self.mode == "flat":
            return torch.zeros_like(x)
        if self.mode == "nan":
            return torch.full_like(x, float("nan"))
        if self.mode == "nan-half":
            return torch.where(z[:, :1, None, None] > 0, float("nan"), x)
        return x


@pytest.fixture(scope="module")
def pggan():
    return GENERATORS.create("pggan-tiny").eval()


@pytest.fixture(scope="module")
def biggan():
    return GENERATORS.create("biggan-deep", tiny=True).eval()


def targets_of(G, seeds):
    with torch.no_grad():
        return G(G.sample_latents(len(seeds), seed=seeds)).clamp(-1, 1)


def plain_cma(G, target, seed, generations, extra_options, loss_kw):
    """The library's own ask-tell loop for one image from m0 = 0 with σ0 = 1 (an N(0, I) prior);
    λ is the library's default; best loss per generation and best latent from ``es.result``."""
    rng = np.random.default_rng(code_seeds([seed], 1, "cma-es")[0])
    options = {"seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape), "maxiter": np.inf,
               "maxfevals": np.inf, "verbose": -9, "verb_disp": 0, "verb_log": 0, "signals_filename": "",
               **extra_options}
    es = cma.CMAEvolutionStrategy(np.zeros(G.latent_dim), 1.0, options)
    loss = ReconstructionLoss(target.expand(es.popsize, -1, -1, -1), **loss_kw)
    best = []
    for _ in range(generations):
        candidates = es.ask()
        with torch.no_grad():
            f = loss(G(torch.tensor(np.array(candidates), dtype=torch.float32)).float())
        es.tell(candidates, f.double().tolist())
        best.append(es.result.fbest)
    return np.array(best), es.result.xbest, es.popsize


def test_matches_the_library_driven_directly(pggan):
    """The batched method on one image = cma's plain ask-tell loop, same seed, same options, the
    same loss (MSE + 0.001 · VGG at the generator's resolution): the same best loss per generation
    and the same best latent."""
    x = targets_of(pggan, [31])
    r = C.CMAES(generations=3, init="zero", perceptual_size=None).invert(pggan, x, seeds=[7])
    best, xbest, lam = plain_cma(pggan, x, 7, 3, {}, {"perceptual_size": pggan.resolution})
    assert r.info["popsize"] == lam == 22 and r.info["sigma0"] == 1.0 and not r.info["diagonal"]
    assert r.loss_history.shape == (3, 1) and r.iterations == 3
    torch.testing.assert_close(r.loss_history[:, 0].double(), torch.from_numpy(best), rtol=1e-6, atol=0)
    torch.testing.assert_close(r.latents["z"][0], torch.from_numpy(xbest).float())


def test_diagonal_covariance_matches_the_library_driven_directly():
    """covariance="diagonal" is the library's sep-CMA-ES (CMA_diagonal=True), pixel MSE only."""
    G = Toy()
    x = targets_of(G, [3])
    r = C.CMAES(generations=12, init="zero", covariance="diagonal", perceptual_weight=0.0).invert(G, x, seeds=[4])
    best, xbest, _ = plain_cma(G, x, 4, 12, {"CMA_diagonal": True}, {"perceptual_weight": 0.0})
    assert r.info["diagonal"]
    torch.testing.assert_close(r.loss_history[:, 0].double(), torch.from_numpy(best), rtol=1e-6, atol=0)
    torch.testing.assert_close(r.latents["z"][0], torch.from_numpy(xbest).float())
    full = C.CMAES(generations=12, init="zero", perceptual_weight=0.0).invert(G, x, seeds=[4])
    assert not torch.equal(full.latents["z"], r.latents["z"])


def test_full_covariance_up_to_1024_dims():
    m = C.CMAES()
    assert not m.diagonal(1024) and m.diagonal(1025) and not C.CMAES(covariance="full").diagonal(9216)
    assert C.CMAES(covariance="diagonal").diagonal(4)


@pytest.mark.parametrize("n", [4, 16, 100, 192, 512, 9216])
def test_popsize_is_the_tutorials_and_the_librarys_default(n):
    by_hand = {4: 8, 16: 12, 100: 17, 192: 19, 512: 22, 9216: 31}[n]  # 4 + ⌊3 ln n⌋
    assert C.default_popsize(n) == by_hand == 4 + math.floor(3 * math.log(n))
    library = cma.CMAEvolutionStrategy(np.zeros(n), 1.0, {"verbose": -9, "verb_log": 0, "CMA_diagonal": n > 1024})
    assert library.popsize == by_hand


@pytest.mark.parametrize(("n", "generations"), [(100, 1142), (512, 22425)])
def test_the_covariance_time_scale_the_docs_state(n, generations):
    """docs/methods.md: the covariance adapts over 1/(c₁ + c_μ) ≈ 1.1·10³ generations at n = 100 and
    2.2·10⁴ at n = 512, far beyond any budget. c₁ and c_μ by hand from the tutorial's Table 1
    (eqs. (57)-(58), α_cov = 2, default weights) must be the library's."""
    lam = C.default_popsize(n)
    mu = lam // 2
    w = np.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
    mueff = w.sum() ** 2 / (w**2).sum()
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 7 / 4 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    sp = cma.CMAEvolutionStrategy(np.zeros(n), 1.0, {"verbose": -9, "verb_log": 0}).sp
    assert (sp.c1, sp.cmu) == (pytest.approx(c1, rel=1e-9), pytest.approx(cmu, rel=1e-9))
    assert round(1 / (c1 + cmu)) == generations


def test_the_start_is_the_priors_mean_and_scale(pggan, biggan):
    """N(0, I): mean 0 (to 4.5 standard errors of the 2048-row estimate), scale 1; BigGAN-deep:
    the std of N(0, 1) truncated to [−2, 2], times 0.4: 0.4 · sqrt(1 − 2·2·φ(2) / (Φ(2) − Φ(−2)))
    = 0.3519 → 0.35; StyleGAN2's W+ (ψ = 1): the generator's own w̄ on every layer."""
    phi = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    mean, scale = C.prior_moments(biggan)
    assert round(0.4 * math.sqrt(1 - 4 * phi / mass), 2) == scale == 0.35 and np.abs(mean).max() < 0.1 * scale
    mean, scale = C.prior_moments(pggan)
    assert scale == 1.0 and mean.shape == (512,) and np.abs(mean).max() < 0.1
    sg2 = GENERATORS.create("stylegan2", tiny=True)
    assert sg2.latent_space == "w+" and sg2.truncation == 1.0
    mean, scale = C.prior_moments(sg2)
    np.testing.assert_allclose(mean, sg2.latent_avg.repeat(sg2.n_latent).double().numpy(), atol=0.1 * scale)
    starts = []  # the reconstruction at trace point 0 is G(m0)
    with tracing(lambda it, snap: starts.append(snap()) if it == 0 else None):
        r = C.CMAES(generations=1, popsize=2, sigma0=0.5, perceptual_weight=0.0).invert(
            sg2, targets_of(sg2, [1]), seeds=[1])
    assert r.info["sigma0"] == pytest.approx(0.5 * scale)
    with torch.no_grad():
        torch.testing.assert_close(starts[0], sg2(torch.from_numpy(mean).float()[None]))


def test_batch_equals_each_alone_with_per_image_classes(biggan):
    """Two images with their own classes (the harness's `generated` targets carry theirs): the
    batch (one forward over 2·λ rows, classes image-major) gives each the result it gets alone."""
    classes = torch.nn.functional.one_hot(torch.tensor([3, 7]), biggan.condition_dim).float()
    with conditioned(biggan, classes), torch.no_grad():
        x = biggan(biggan.sample_latents(2, seed=[41, 42])).clamp(-1, 1)
    m = C.CMAES(generations=3, popsize=4, perceptual_size=None)
    with conditioned(biggan, classes):
        joint = m.invert(biggan, x, seeds=[5, 6])
    for i, s in enumerate([5, 6]):
        with conditioned(biggan, classes[i:i + 1]):
            alone = m.invert(biggan, x[i:i + 1], seeds=[s])
        torch.testing.assert_close(joint.loss_history[:, i], alone.loss_history[:, 0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(joint.latents["z"][i], alone.latents["z"][0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(joint.reconstructions[i], alone.reconstructions[0], rtol=1e-4, atol=1e-5)
    with conditioned(biggan, classes[:1]):  # image 1 under image 0's class: another problem
        other = m.invert(biggan, x[1:], seeds=[6])
    assert not torch.allclose(other.loss_history[:, 0], joint.loss_history[:, 1])


def test_best_so_far_is_monotone_and_is_the_returned_latent():
    G, x = Toy(), targets_of(Toy(), [3, 4])
    r = C.CMAES(generations=30, perceptual_weight=0.0).invert(G, x, seeds=[1, 2])
    h = r.loss_history
    assert h.shape == (30, 2) and bool((h[1:] <= h[:-1]).all()) and bool((h[-1] < h[0]).all())
    with torch.no_grad():
        own = ReconstructionLoss(x, perceptual_weight=0.0)(G(r.latents["z"]))
    torch.testing.assert_close(own, h[-1])
    torch.testing.assert_close(r.reconstructions, G(r.latents["z"]).detach())


def test_non_finite_candidates_rank_last_and_an_all_nan_batch_fails():
    x = targets_of(Toy(), [3])
    r = C.CMAES(generations=10, perceptual_weight=0.0).invert(Toy("nan-half"), x, seeds=[1])
    assert torch.isfinite(r.loss_history).all() and r.latents["z"][0, 0] <= 0 and not r.failures
    with pytest.raises(InversionFailed, match="non-finite loss"):
        C.CMAES(generations=3, perceptual_weight=0.0).invert(Toy("nan"), x, seeds=[1])


def test_an_image_the_library_stops_is_frozen():
    """A constant image: every candidate has the same loss, so the library's own criteria stop the
    strategy after the first generation (`tolfun`); the image keeps its best loss for the rest of
    the budget, and nothing more is evaluated."""
    G, x = Toy("flat"), targets_of(Toy(), [3])
    calls = []
    G.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    r = C.CMAES(generations=10, perceptual_weight=0.0).invert(G, x, seeds=[1])
    assert r.info["stopped"][0].startswith("generation 0: {'tolfun'") and r.iterations == 10
    assert r.loss_history.shape == (10, 1) and (r.loss_history == r.loss_history[0]).all()
    assert calls == [8, 1]  # generation 0 (λ = 8 rows), then only the final synthesis


def test_no_autograd_no_global_state_no_files(tmp_path, monkeypatch):
    """Gradient-free: every forward runs with autograd off; numpy's global generator is untouched,
    and the library writes nothing (no outcmaes/ folder) into the working directory."""
    monkeypatch.chdir(tmp_path)
    G, x = Toy(), targets_of(Toy(), [3])
    G.requires_grad_(True)
    grad_modes = []
    G.register_forward_pre_hook(lambda mod, args: grad_modes.append(torch.is_grad_enabled()))
    state = np.random.get_state()[1].copy()  # noqa: NPY002  # the legacy global generator is the point
    with torch.enable_grad():
        C.CMAES(generations=3, perceptual_weight=0.0).invert(G, x, seeds=[1])
    assert grad_modes and not any(grad_modes)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert list(tmp_path.iterdir()) == []


def test_trace_points_and_progress():
    G, x = Toy(), targets_of(Toy(), [3, 4])
    points, progress = [], []
    with tracing(lambda it, snap: points.append((it, tuple(snap().shape)))):
        C.CMAES(generations=4, perceptual_weight=0.0).invert(G, x, seeds=[1, 2],
                                                             progress=lambda d, n: progress.append(d))
    assert points == [(i, (2, 3, 4, 4)) for i in range(5)] and progress == [1, 2, 3, 4]


def test_registered_profiles_and_tags():
    cls = METHODS.get("cma-es")
    assert cls is C.CMAES and cls.budget_setting == "generations"
    assert cls.from_profile("paper").get_settings() == {
        "generations": 350, "popsize": None, "sigma0": 1.0, "init": "mean", "covariance": "auto", "mse_weight": 1.0,
        "perceptual_weight": 0.001, "perceptual_size": 256}
    assert cls.from_profile("quick").settings.perceptual_size is None
    tags = cls().get_tags()
    assert not tags.deterministic and tags.batch_independent and tags.improves_in_domain
    assert cls().unsupported(Toy()) is None


@pytest.mark.parametrize("bad, match", [
    ({"popsize": 1}, "popsize must be >= 2"), ({"popsize": 0}, "popsize"), ({"popsize": 2.5}, "popsize"),
    ({"popsize": True}, "popsize"), ({"sigma0": 0.0}, "sigma0"), ({"sigma0": -1.0}, "sigma0"),
    ({"sigma0": float("nan")}, "sigma0"), ({"sigma0": float("inf")}, "sigma0"), ({"generations": 0}, "generations"),
    ({"init": "prior"}, "init must be one of mean, zero, sample"), ({"covariance": "sparse"}, "covariance must"),
    ({"perceptual_weight": -1.0}, "perceptual_weight"),
    ({"mse_weight": 0.0, "perceptual_weight": 0.0}, "must not all be 0"), ({"perceptual_size": 0}, "perceptual_size"),
])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        C.CMAES(**bad)


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match=r"\[B, 3, 4, 4\]"):
        C.CMAES().invert(Toy(), torch.zeros(1, 3, 5, 4))
