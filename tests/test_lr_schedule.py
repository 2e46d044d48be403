"""The learning-rate schedule (``lr_schedule``) of the optimisation methods, checked against
independent computations: on ``½‖x‖²`` plain SGD multiplies x by ``1 − η_t`` at step t, so the final
iterate is the product of those factors with η_t from the SGDR formula written out here; a run split
into phases (``start``/``total``) follows the same schedule as one call; the default schedule leaves
result keys (and so every stored run) as they were."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gan_inversion_bench.harness import RunConfig
from gan_inversion_bench.harness.orchestrate import run_method_key
from gan_inversion_bench.method_tools import LR_SCHEDULES, lr_factor, optimise
from gan_inversion_bench.precision import ExecutionOptions
from gan_inversion_bench.registry import METHODS
from gan_inversion_bench.store import method_key
from gan_inversion_bench.testing import suite_method, tiny_generator
from gan_inversion_bench.tuning import TuneConfig, held_method

SCHEDULED = ("single-code", "mganprior", "pmsfc")


def sgdr(step: int, total: int) -> float:
    """Loshchilov & Hutter (2017), eq. (5), one cycle of ``total`` steps, η_max = 1, η_min = 0."""
    return 0.0 + 0.5 * (1.0 - 0.0) * (1.0 + np.cos(step / total * np.pi))


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 5000), data=st.data())
def test_cosine_factor_follows_sgdr_and_decays(total, data):
    step = data.draw(st.integers(0, total - 1))
    assert lr_factor("cosine", step, total) == pytest.approx(sgdr(step, total), abs=1e-12)
    assert lr_factor("constant", step, total) == 1.0
    assert 0.0 < lr_factor("cosine", step, total) <= 1.0
    if step + 1 < total:
        assert lr_factor("cosine", step + 1, total) < lr_factor("cosine", step, total)


def _quadratic(schedule: str, lrs: list[float], iterations: int, **kw) -> list[torch.Tensor]:
    xs = [torch.full((3, 2), 1.0 + i, requires_grad=True) for i in range(len(lrs))]
    optimise(xs, lambda: sum(0.5 * x.pow(2).sum(1) for x in xs), optimizer="sgd", lr=lrs[0], lrs=lrs,
             iterations=iterations, schedule=schedule, **kw)
    return [x.detach() for x in xs]


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_sgd_on_a_quadratic_takes_the_scheduled_steps(schedule):
    lrs, n = [0.3, 0.05], 9  # a separate rate per parameter (as mGANprior's α, PmSFC's w): both scaled
    got = _quadratic(schedule, lrs, n)
    for i, lr in enumerate(lrs):
        factors = [sgdr(t, n) if schedule == "cosine" else 1.0 for t in range(n)]
        expected = (1.0 + i) * math.prod(1.0 - lr * f for f in factors)
        torch.testing.assert_close(got[i], torch.full((3, 2), expected), rtol=1e-5, atol=1e-7)


def test_cosine_differs_from_constant_and_a_phased_run_continues_the_schedule():
    whole = _quadratic("cosine", [0.3], 10)[0]
    assert not torch.allclose(whole, _quadratic("constant", [0.3], 10)[0])
    x = torch.full((3, 2), 1.0, requires_grad=True)
    for start in (0, 4):  # two calls, 4 then 6 steps, of one 10-step schedule
        optimise([x], lambda: 0.5 * x.pow(2).sum(1), optimizer="sgd", lr=0.3, iterations=4 if start == 0 else 6,
                 schedule="cosine", start=start, total=10)
    torch.testing.assert_close(x.detach(), whole)


def test_unknown_schedule_is_refused_by_optimise_and_every_method():
    x = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of 'constant', 'cosine', got 'linear'"):
        optimise([x], lambda: x.pow(2).sum(1), optimizer="adam", lr=0.1, iterations=1, schedule="linear")
    for name in SCHEDULED:
        with pytest.raises(ValueError, match=r"lr_schedule must be one of .*got 'step'"):
            METHODS.get(name)(lr_schedule="step")


@pytest.mark.parametrize("name", SCHEDULED)
def test_constant_schedule_keeps_result_keys_and_cosine_gets_its_own(name):
    config, options = RunConfig(generator="pggan-tiny", methods=[name], profile="quick"), ExecutionOptions()
    method = METHODS.get(name).from_profile("quick")
    omit, unused = method.KEY_OMITS_DEFAULTS, method.unused_settings()
    # the key as stored before the setting existed: the other settings, the other omitted defaults left out
    before = {k: v for k, v in method.get_settings().items()
              if k != "lr_schedule" and not (k in omit and omit[k] == v) and k not in unused}
    key = run_method_key(method, config, options)
    assert key == method_key(name, method.version, before, {"prepared": method.prepared_state(), "profile": "quick"})
    assert run_method_key(method.clone(lr_schedule="constant"), config, options) == key
    assert run_method_key(method.clone(lr_schedule="cosine"), config, options) != key


@pytest.mark.parametrize("name,extra", [(n, {}) for n in SCHEDULED] + [("pmsfc", {"variant": "released"})])
def test_scheduled_batch_equals_one_image_at_a_time(name, extra):
    G = tiny_generator("pggan-tiny")
    method = suite_method(name).clone(lr_schedule="cosine", iterations=6, **extra)
    method.prepare(G)
    targets = G(G.sample_latents(2, seed=3).to(G.device)).float().clamp(-1, 1).detach()
    batch = method.invert(G, targets, seeds=[5, 6])
    for i in range(2):
        alone = method.invert(G, targets[i:i + 1], seeds=[5 + i])
        torch.testing.assert_close(batch.reconstructions[i:i + 1], alone.reconstructions, rtol=1e-4, atol=1e-5)
    constant = method.with_settings(lr_schedule="constant").invert(G, targets, seeds=[5, 6])
    assert not torch.allclose(batch.reconstructions, constant.reconstructions)


def test_tune_can_hold_the_schedule():
    method = held_method("single-code", TuneConfig(budget=20, held={"lr_schedule": "cosine"}))
    assert method.settings.lr_schedule == "cosine" and method.settings.iterations == 20
