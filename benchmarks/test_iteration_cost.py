"""Per-iteration cost and fixed-budget quality of every registered method × generator × execution.

Each benchmark inverts ``N_IMAGES`` in-domain targets (generated with a fixed seed) with the
method's ``quick`` profile for ``ITERATIONS`` iterations, in the toolkit's ``batched`` execution
and in the seeds' per-image ``reference`` pattern; the time of one such call is measured
(``prepare`` is not timed; PmSFC's stage 1 is shortened to 50 steps), and ``extra_info`` records
seconds per iteration and image, FLOPs per iteration and image (the harness's count: the FLOPs
of ``invert`` at a budget of 2 minus those at 1), PSNR and LPIPS after the budget, so
``gib bench-compare`` can check both speed and quality. Tiny generator configurations run on the CPU;
on a GPU the real sizes are added (``pggan`` 256 with random weights, which costs what the real
network costs). The methods outside the default run are timed too, batched, on one tiny family each
(``dcgan-digiface64``, or the first the method supports); a method without a budget (an encoder's
forward pass) is timed per call and its "iteration" is that call.
"""
from __future__ import annotations

import pytest
import torch

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.metrics import compute_metrics
from gan_inversion_bench.perf import count_flops

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
ITERATIONS = 10
N_IMAGES = 4
ROUNDS = 5
#: settings that keep untimed set-up short (PmSFC's stage 1 is prepared, not timed)
SETUP = {"pmsfc": {"discovery_iterations": 50},
         "mganprior": {"n_codes": 10},  # the workload of the stored baselines (the quick profile now has 30)
         "encoder": {"encoder_steps": 50}, "idinvert": {"encoder_steps": 50},
         "pivotal-tuning": {"pivot_budget": 10}}  # the pivot's 100 iterations would dominate the 10 tuning steps
#: (method, generator) → settings replacing the quick profile's (as in tests/test_method_conformance.py:
#: PmSFC diverges on StyleGAN2 at the quick profile's SGD lr 10)
OVERRIDES = {("pmsfc", "stylegan2"): {"lr": 1.0}}

#: every registered family in its tiny configuration; the seeds' per-image pattern ("reference")
#: is timed on the first two only (the speed-up it measures does not depend on the family)
CASES = [("pggan-tiny", {}), ("dcgan-digiface64", {"tiny": True}), ("stylegan2", {"tiny": True}),
         ("biggan-deep", {"tiny": True}), ("dcgan-omniart-eyes128", {"tiny": True})]
REFERENCE_ON = {"pggan-tiny", "dcgan-digiface64", "pggan-256-random"}
if CUDA:
    CASES.append(("pggan", {"tiny": False, "weights": None}))


def build_generator(name: str, options: dict):
    if name == "pggan" and CUDA:
        from gan_inversion_bench.generators.pggan import PGGAN

        G = PGGAN(resolution=256)
        G.init_random(0)
        G.name = "pggan-256-random"
        return G.to(DEVICE).eval()
    return GENERATORS.create(name, **options).to(DEVICE).eval()


@pytest.fixture(scope="module", params=[c[0] for c in CASES])
def generator(request):
    torch.manual_seed(0)
    return build_generator(request.param, dict(CASES)[request.param])


def build_method(name: str, iterations: int, execution: str, generator_name: str = ""):
    """The quick profile at ``iterations`` through the method contract (with_budget,
    reference_execution); SETUP and OVERRIDES are per-method settings, keyed by method name."""
    cls = METHODS.get(name)
    method = cls.from_profile("quick", **SETUP.get(name, {}), **OVERRIDES.get((name, generator_name), {}))
    if cls.budget_setting is not None:
        method = method.with_budget(iterations)
    if execution != "batched":
        method = method.reference_execution()
        if method is None:
            pytest.skip(f"{name} has no reference execution")
    return method


@pytest.mark.parametrize("execution", ["batched", "reference"])
@pytest.mark.parametrize("method_name", sorted(n for n in METHODS.names() if METHODS.get(n).in_default_run))
def test_iteration_cost(benchmark, generator, method_name, execution, tmp_path):
    if execution == "reference" and generator.name not in REFERENCE_ON:
        pytest.skip(f"reference execution is timed on {', '.join(sorted(REFERENCE_ON))} only")
    measure(benchmark, generator, method_name, execution, tmp_path)


#: the methods outside the default run (slower per image or needing a trained part), timed batched
OTHER_METHODS = sorted(n for n in METHODS.names() if not METHODS.get(n).in_default_run)


def home_family(method_name: str) -> str:
    """``dcgan-digiface64`` if the method runs there, else the first family of CASES it supports."""
    names = ["dcgan-digiface64", *[c[0] for c in CASES if c[0] != "dcgan-digiface64"]]
    for name in names:
        G = build_generator(name, dict(CASES)[name])
        if build_method(method_name, ITERATIONS, "batched", name).unsupported(G) is None:
            return name
    raise AssertionError(f"{method_name} supports none of {names}")


@pytest.mark.parametrize("method_name", OTHER_METHODS)
def test_iteration_cost_other_methods(benchmark, method_name, tmp_path):
    torch.manual_seed(0)
    name = home_family(method_name)
    measure(benchmark, build_generator(name, dict(CASES)[name]), method_name, "batched", tmp_path)


def measure(benchmark, generator, method_name: str, execution: str, tmp_path) -> None:
    """Time ``invert`` of N_IMAGES in-domain targets; record seconds and FLOPs per iteration and image,
    PSNR and LPIPS."""
    with torch.no_grad():
        targets = generator(generator.sample_latents(N_IMAGES, seed=[1000 + i for i in range(N_IMAGES)])).clamp(-1, 1)
    method = build_method(method_name, ITERATIONS, execution, generator.name)
    method.prepare(generator, seed=0, cache_dir=tmp_path)
    seeds = list(range(N_IMAGES))

    def run():
        result = method.invert(generator, targets, seeds=seeds)
        if CUDA:
            torch.cuda.synchronize()
        return result

    result = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    metrics = compute_metrics(result.reconstructions.clamp(-1, 1), targets)
    iterations = ITERATIONS
    if method.budget_setting is None:  # one forward pass: its FLOPs are the call's
        iterations, flops = 1, count_flops(lambda: method.invert(generator, targets, seeds=seeds))
    else:
        once, twice = (method.with_budget(n) for n in (1, 2))
        flops = count_flops(lambda: twice.invert(generator, targets, seeds=seeds)) - count_flops(
            lambda: once.invert(generator, targets, seeds=seeds))
    benchmark.extra_info.update({
        "generator": getattr(generator, "name", ""), "device": str(DEVICE), "iterations": iterations,
        "images": N_IMAGES, "execution": execution, "psnr": float(metrics["psnr"].mean()),
        "lpips": float(metrics["lpips"].mean()), "flops_per_iteration_per_image": flops / N_IMAGES,
        "seconds_per_iteration_per_image": benchmark.stats.stats.min / iterations / N_IMAGES,
    })
