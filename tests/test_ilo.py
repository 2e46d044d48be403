"""ILO: the L1-ball projection against independent computations, radius 0 = stage 0, the features
stay in their balls (recomputed with an explicit stage loop), the schedule, defaults and refusals."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import optimize

from gan_inversion_bench import METHODS
from gan_inversion_bench.generator import SplitState
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method_tools import code_seeds
from gan_inversion_bench.methods import ilo as M
from gan_inversion_bench.testing import tiny_generator

#: a short Adam run (the paper's optimiser) without the VGG term, to keep the tests fast
FAST = {"iterations": 12, "perceptual_weight": 0.0, "perceptual_size": None}


def targets_of(G, seeds):
    with torch.no_grad():
        return G(G.sample_latents(len(seeds), seed=seeds)).clamp(-1, 1)


# ---- the projection -------------------------------------------------------------------------------
def threshold_by_bisection(v: np.ndarray, r: float) -> np.ndarray:
    """Projection onto {‖w‖₁ ≤ r} as soft thresholding, θ found by root finding (no sorting)."""
    a = np.abs(v)
    if a.sum() <= r:
        return v.copy()
    theta = optimize.brentq(lambda t: np.maximum(a - t, 0).sum() - r, 0.0, a.max(), xtol=1e-14)
    return np.sign(v) * np.maximum(a - theta, 0)


def projection_by_qp(v: np.ndarray, r: float) -> np.ndarray:
    """min ‖w − v‖² s.t. ‖w‖₁ ≤ r as a smooth QP in w = p − q, p, q ≥ 0 (SLSQP, exact gradients)."""
    n = v.size

    def residual(pq):
        return pq[:n] - pq[n:] - v

    res = optimize.minimize(lambda pq: float((residual(pq) ** 2).sum()), np.zeros(2 * n), method="SLSQP",
                            jac=lambda pq: np.concatenate([2 * residual(pq), -2 * residual(pq)]),
                            bounds=[(0, None)] * (2 * n),
                            constraints=[{"type": "ineq", "fun": lambda pq: r - pq.sum(),
                                          "jac": lambda pq: -np.ones(2 * n)}],
                            options={"ftol": 1e-12, "maxiter": 1000})
    assert res.success, res.message
    return res.x[:n] - res.x[n:]


def test_projection_matches_root_finding_and_a_qp_solver():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 2, 3, 2)) * rng.uniform(0.1, 3.0, size=(6, 1, 1, 1))  # rows of 12 values
    l1 = np.abs(v).reshape(6, -1).sum(1)
    radii = np.array([0.5, 0.1 * l1[1], l1[2] * 0.999, l1[3] * 2.0, 3.0, 1e-3])  # outside, inside, tiny
    got = M.project_l1_ball(torch.from_numpy(v), torch.from_numpy(radii)).numpy()
    assert got.shape == v.shape
    for b in range(6):
        want = threshold_by_bisection(v[b].ravel(), radii[b])
        np.testing.assert_allclose(got[b].ravel(), want, rtol=1e-9, atol=1e-12)
        assert np.abs(got[b]).sum() <= radii[b] * (1 + 1e-12) + 1e-12
    for b in (0, 1, 4):  # a generic solver on the same small problems
        np.testing.assert_allclose(got[b].ravel(), projection_by_qp(v[b].ravel(), radii[b]), atol=1e-8)
    np.testing.assert_array_equal(got[3], v[3])  # inside the ball: unchanged


def test_projection_edge_cases_and_fp32():
    v = torch.tensor([[3.0, -1.0, 0.5], [3.0, -1.0, 0.5], [3.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    out = M.project_l1_ball(v, torch.tensor([0.0, math.inf, 2.0, 1.0]))
    assert torch.equal(out[0], torch.zeros(3)) and torch.equal(out[1], v[1]) and torch.equal(out[3], v[3])
    torch.testing.assert_close(out[2], torch.tensor([2.0, 0.0, 0.0]))  # θ = 1: only the largest survives
    x = torch.randn(4, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    r = x.abs().flatten(1).sum(1) * 0.3
    p = M.project_l1_ball(x, r)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.abs().flatten(1).sum(1), r, rtol=1e-5, atol=0)
    want = torch.stack([M.project_l1_ball(x[i:i + 1], r[i:i + 1])[0] for i in range(4)])
    assert torch.equal(p, want)  # rows are independent


# ---- the method -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pggan-tiny", "stylegan2", "biggan-deep"])
def test_radius_zero_keeps_the_result_of_stage_zero(name):
    """With every radius 0 the later stages cannot move: the reconstruction is G(z*) of stage 0,
    and the loss stays at stage 0's last value (Adam, the paper's optimiser)."""
    G = tiny_generator(name)
    m = METHODS.get("ilo")(radii=(0.0,), **FAST)
    r = m.invert(G, targets_of(G, [5, 6]), seeds=[1, 2])
    with torch.no_grad():
        stage0 = G(r.latents["z"])
    torch.testing.assert_close(r.reconstructions, stage0, rtol=0, atol=1e-5)
    stage0_steps = r.info["stage_iterations"][0]
    h = r.loss_history
    assert r.info["stage_iterations"] == [4, 4, 2, 2] and h.shape == (12, 2)
    torch.testing.assert_close(h[stage0_steps:], h[stage0_steps:stage0_steps + 1].expand(12 - stage0_steps, 2),
                               rtol=1e-5, atol=1e-7)
    assert (h[stage0_steps] < h[0]).all()


def run_stages(G, x, start, end):
    """The generator's stages start … end-1 on x, written out here (independent of ilo.advance)."""
    for _, stage in list(G.stages())[start:end]:
        x = stage(x)
    return x


@pytest.mark.parametrize("name", ["dcgan-digiface64", "stylegan2", "biggan-deep"])
def test_each_stage_feature_stays_in_its_ball(name):
    """Recompute every stage's centre from z* and the previous stages' features with an explicit
    stage loop: ‖f_j − c_j‖₁ ≤ r_j ‖c_j‖₁, the ball is reached (the constraint binds), and the
    reconstruction is G2 of the last feature."""
    G = tiny_generator(name)
    radii = (0.005, 0.01, 0.02)  # small enough that every ball binds within 2-4 steps
    m = METHODS.get("ilo")(radii=radii, **FAST)
    r = m.invert(G, targets_of(G, [7, 8]), seeds=[3, 4])
    splits = m.resolved_splits(G)
    with torch.no_grad():
        x = G.g1(r.latents["z"], splits[0])
        for j, k in enumerate(splits):
            if j:
                x = run_stages(G, x, splits[j - 1], k)
            c = G.features_of(x)
            f = r.latents[f"feature.{G.split_points[k].name}"]
            dist, bound = (f - c).abs().flatten(1).sum(1), radii[j] * c.abs().flatten(1).sum(1)
            assert (dist <= bound * (1 + 1e-5) + 1e-6).all(), (k, dist, bound)
            assert (dist > 0.5 * bound).all(), f"the ball at split {k} never bound: {dist} of {bound}"
            x = G.with_features(x, f)
            assert isinstance(x, SplitState) == (name != "dcgan-digiface64")
        torch.testing.assert_close(r.reconstructions, G.g2(x, splits[-1]), rtol=0, atol=1e-5)


def test_first_loss_is_the_prior_sample_of_the_seed_and_z_stays_on_its_sphere():
    G = tiny_generator("pggan-tiny")
    x = targets_of(G, [9])
    r = METHODS.get("ilo")(perceptual_weight=0.0, iterations=6).invert(G, x, seeds=[11])
    z0 = G.sample_latents(1, seed=code_seeds([11], 1, "ilo"))
    with torch.no_grad():
        want = ((G(z0) - x) ** 2).mean()
        assert float(r.loss_history[0, 0]) == pytest.approx(float(want), rel=1e-5)
        assert float(ReconstructionLoss(x, perceptual_weight=0.0)(G(z0))[0]) == pytest.approx(float(want), rel=1e-6)
    torch.testing.assert_close(r.latents["z"].norm(dim=1), z0.norm(dim=1), rtol=1e-5, atol=0)
    assert not torch.equal(r.latents["z"], z0)


def test_schedule_and_budget():
    assert M.stage_iterations(150, (2, 2, 1, 1)) == [50, 50, 25, 25]  # the release's 50/50/25/25
    assert M.stage_iterations(100, (2, 2, 1, 1)) == [33, 33, 17, 17]  # remainders 1/3, 1/3, 2/3, 2/3
    assert M.stage_iterations(8, (2, 2, 1, 1)) == [3, 3, 1, 1]
    assert M.stage_iterations(1, (2, 2, 1, 1)) == [1, 0, 0, 0]
    assert M.stage_iterations(2, (2, 2, 1, 1)) == [1, 1, 0, 0]
    for n in range(1, 40):
        assert sum(M.stage_iterations(n, (1, 3, 0.5, 2))) == n
    m = METHODS.get("ilo").from_profile("paper")
    assert m.budget == 150 and m.with_budget(40).settings.stage_weights == (2.0, 2.0, 1.0, 1.0)
    assert M.ramp(0.5) == pytest.approx(0.75) and M.ramp(0.025) == pytest.approx(0.5) and M.ramp(1.0) == 0.0
    G = tiny_generator("pggan-tiny")
    r = METHODS.get("ilo")(**{**FAST, "iterations": 2}).invert(G, targets_of(G, [1]), seeds=[0])
    assert r.iterations == 2 and r.loss_history.shape == (2, 1) and r.info["stage_iterations"] == [1, 1, 0, 0]


def test_default_splits_are_the_first_three_resolution_blocks():
    want = {"pggan-tiny": ["4x4.conv", "8x8.conv1", "16x16.conv1"], "stylegan2": ["conv1", "convs.1", "convs.3"],
            "dcgan-digiface64": ["4x4.relu", "8x8.relu", "16x16.relu"],
            "dcgan-omniart-eyes128": ["4x4.dropout", "8x8.relu", "16x16.relu"],
            "biggan-deep": ["layers.0", "layers.1", "layers.3"]}
    m = METHODS.get("ilo")()
    for name, names in want.items():
        G = tiny_generator(name)
        got = m.resolved_splits(G)
        assert [G.split_points[k].name for k in got] == names, name
        assert m.resolved_split(G) == got[-1]
        anonymous = copy.copy(G)
        anonymous.name = "unregistered"  # the heuristic agrees with the table
        assert M.default_splits(anonymous) == got, name
    state = m.prepare(tiny_generator("pggan-tiny")).prepared_state()
    assert [s["name"] for s in state["splits"]] == want["pggan-tiny"] and state["splits"][0]["shape"] == [32, 4, 4]


@pytest.mark.parametrize("settings,match", [
    ({"iterations": 0}, "iterations"),
    ({"stage_weights": (1.0, 1.0)}, "stage_weights must be 4"),
    ({"stage_weights": (0.0, 1.0, 1.0, 1.0)}, "stage_weights"),
    ({"stage_weights": (1.0, -1.0, 1.0, 1.0)}, "stage_weights"),
    ({"stage_weights": "2211"}, "stage_weights must be a list"),
    ({"radii": (0.1, 0.2)}, "radii must be 1 or 3"),
    ({"radii": (-0.1,)}, "radii"),
    ({"radii": (float("nan"),)}, "radii"),
    ({"radii": 0.1}, "radii must be a list"),
    ({"splits": ()}, "splits must be None"),
    ({"splits": (True,)}, "splits must be None"),
    ({"splits": (3, 6)}, "stage_weights must be 3"),
    ({"optimizer": "lbfgs"}, "optimiser"),
    ({"lr": 0.0}, "lr"),
    ({"feature_lr": float("inf")}, "feature_lr"),
    ({"sphere": "yes"}, "sphere"),
    ({"perceptual_weight": -1.0}, "perceptual_weight"),
])
def test_bad_settings_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        METHODS.get("ilo")(**settings)


def test_lists_from_the_command_line_become_tuples():
    m = METHODS.get("ilo")(splits=[3, 6], stage_weights=[1, 1, 1], radii=[0.1, float("inf")])
    assert m.settings.splits == (3, 6) and m.settings.radii == (0.1, math.inf)


@pytest.mark.parametrize("splits,match", [
    ((6, 3), "strictly increasing"),
    ((0, 3), "between 1 and"),
    ((3, 9), "between 1 and 8"),  # 9 is the image on the tiny PGGAN
    ((3, 42), "out of range"),
    (("4x4.conv", "no-such-layer"), "unknown split point"),
])
def test_bad_splits_for_a_generator_are_refused(splits, match):
    G = tiny_generator("pggan-tiny")
    m = METHODS.get("ilo")(splits=splits, stage_weights=(1, 1, 1), **{k: v for k, v in FAST.items()
                                                                      if k != "iterations"})
    assert match.split()[0] in (m.unsupported(G) or "")
    with pytest.raises(ValueError, match=match):
        m.invert(G, targets_of(G, [1]), seeds=[0])


def test_a_generator_with_too_few_resolutions_is_unsupported():
    G = copy.copy(tiny_generator("stylegan2"))
    G.name = "unregistered"
    with pytest.raises(ValueError, match="has 3 spatial resolution"):
        M.default_splits(G, n=4)
    assert METHODS.get("ilo")().unsupported(tiny_generator("stylegan2")) is None
