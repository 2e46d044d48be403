"""Every setting of every method, and every option of every generator, acts: changing it changes
what it governs.

A setting that is parsed, validated and stored with every result, and then never read (or read
only on one code path, or left out of a cache key) is a silent defect: a tuned profile, a sweep
or a table row would then describe settings that never ran. Each method runs its conformance
profile (``testing.suite_method``) on a tiny generator twice, differing in one setting, and the
observed quantity must differ:

- ``result``: the reconstructions and the latents (names and values);
- ``loss``: the loss history the result reports;
- ``stage1``: what ``prepare`` produced (PmSFC's S, the encoder's weights), with a cache
  directory shared by both runs, so a setting left out of the stage-1 cache key shows as inert.

Some settings act only when another enables them (a perceptual size needs a perceptual term; an
official-affinity knob needs the official affinity); ``context`` sets that up for both runs, and
``context`` is also used to avoid invariances that would hide a setting (Adam is invariant to the
scale of a lone loss term, so a loss weight is changed next to another term). A setting that by
design leaves the result unchanged is listed in ``COVERED`` with the test that checks what it does
instead. A new setting that is in neither table fails :func:`test_every_setting_is_listed`.

Generator options (``--gen-opt``, read from the factory's signature) get the same treatment on
the tiny networks: each changes the generated images or the latent's shape, and each is reachable
from the command line (a documented option hidden in ``**kw`` was not). So do the restoration
tasks' settings (``--set task.KEY=VALUE``): each changes the observation of the same image.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from gan_inversion_bench.cli_common import generator_options
from gan_inversion_bench.generators.biggan import TINY_CONFIG
from gan_inversion_bench.registry import GENERATORS, METHODS
from gan_inversion_bench.tasks import TASKS, make_task
from gan_inversion_bench.testing import scratch_folder, suite_method, tiny_generator

TESTS = Path(__file__).parent


class Change(NamedTuple):
    value: Any
    context: dict[str, Any] = {}  # noqa: RUF012 (never mutated: a NamedTuple default)
    observe: str = "result"


PW = {"perceptual_weight": 0.1}  # a perceptual term next to the pixel term
CMA_PW = {"perceptual_weight": 0.01, "perceptual_size": None}  # at 64², not the default 256² (20 s a run)

# The suite's profile of single-code, mGANprior and PmSFC has the perceptual term at 32²; their change is to the
# generator's own size (None).
CHANGES: dict[str, dict[str, Change]] = {
    "single-code": {
        "iterations": Change(4), "optimizer": Change("adam"), "lr": Change(0.5), "init": Change("zero"),
        "mse_weight": Change(0.5), "perceptual_weight": Change(0.1), "perceptual_size": Change(None, PW),
        "lr_schedule": Change("cosine"),
    },
    "mganprior": {
        "n_codes": Change(5), "split": Change(2), "iterations": Change(4), "optimizer": Change("adam"),
        "lr": Change(5.0), "mse_weight": Change(0.5), "perceptual_weight": Change(0.1),
        "perceptual_size": Change(None, PW), "divide_by_n": Change(False), "alpha_lr": Change(1.0),
        "lr_schedule": Change("cosine"),
    },
    "pmsfc": {
        "variant": Change("released"), "split": Change(2), "n_subspaces": Change(3),
        "codes_per_subspace": Change(2), "iterations": Change(4), "optimizer": Change("adam"),
        "lr": Change(0.5), "init": Change("zero"), "weight_init": Change(0.25), "weight_lr": Change(0.1),
        "denominator_eps": Change(0.5, {"weight_init": 0.01}),
        "mse_weight": Change(0.5), "perceptual_weight": Change(0.1), "perceptual_size": Change(None, PW),
        "composite_weight": Change(0.5, {"variant": "released"}),
        "base_weight": Change(0.5, {"variant": "released"}),
        "discovery_iterations": Change(10, observe="stage1"), "discovery_batch": Change(2, observe="stage1"),
        "discovery_optimizer": Change("sgd", observe="stage1"), "discovery_lr": Change(1e-2, observe="stage1"),
        "data_weight": Change(0.5, observe="stage1"), "sparsity_weight": Change(0.1, observe="stage1"),
        "s_init": Change(1e-2, observe="stage1"),
        "affinity": Change("official"),
        "official_orientation": Change("discovery", {"affinity": "official"}),
        "threshold_ratio": Change(0.6, {"affinity": "official"}),
        "subspace_dim": Change(2, {"affinity": "official"}),
        "affinity_power": Change(0.5, {"affinity": "official"}),
        "partition": Change("random"), "lr_schedule": Change("cosine"),
    },
    "ilo": {  # the suite's feature steps stay far inside any L1 ball: a radius binds only at a large feature_lr
        "iterations": Change(12), "stage_weights": Change((1.0, 1.0, 1.0, 1.0)), "splits": Change((1, 2, 3)),
        "radii": Change((0.01,), {"feature_lr": 1e4}), "optimizer": Change("adam"), "lr": Change(1.0),
        "feature_lr": Change(1.0), "lr_ramp": Change(False), "sphere": Change(False), "mse_weight": Change(0.5),
        "perceptual_weight": Change(0.1), "perceptual_size": Change(32, PW),
    },
    "cma-es": {  # ranks, not values, steer it: the two terms are made comparable (VGG L1 ≈ 75 × MSE here)
        "generations": Change(4), "popsize": Change(8), "sigma0": Change(0.5), "init": Change("mean"),
        "covariance": Change("diagonal"), "mse_weight": Change(0.1, CMA_PW),
        "perceptual_weight": Change(0.01, {"perceptual_size": None}), "perceptual_size": Change(32, CMA_PW),
    },
    "pivotal-tuning": {
        "steps": Change(4), "lr": Change(1e-2), "pivot_method": Change("cma-es"),
        "pivot_profile": Change("paper", {"pivot_settings": None}), "pivot_budget": Change(4),
        "pivot_settings": Change({"perceptual_weight": 0.0, "lr": 0.5}),
        "mse_weight": Change(0.5, PW), "perceptual_weight": Change(0.1), "perceptual_size": Change(32, PW),
        "perceptual": Change("vgg-relu3_3", PW), "locality_weight": Change(0.1),
        "locality_l2_weight": Change(0.5, {"locality_weight": 0.1}),
        "locality_alpha": Change(5.0, {"locality_weight": 0.1}),
        "keep_weights": Change(True),
    },
    "image2stylegan": {
        "iterations": Change(4), "lr": Change(0.05), "mse_weight": Change(0.5), "perceptual_weight": Change(0.5),
        "perceptual_size": Change(32), "perceptual": Change("vgg-relu3_3"), "optimize_noise": Change(True),
        "noise_schedule": Change("joint", {"optimize_noise": True}),
        "noise_fraction": Change(0.25, {"optimize_noise": True}),
    },
}
_ENCODER = {  # the encoder's training settings act on what prepare trains
    "encoder_steps": Change(6, observe="stage1"), "encoder_batch": Change(2, observe="stage1"),
    "encoder_lr": Change(1e-3, observe="stage1"), "encoder_width": Change(4, observe="stage1"),
    "encoder_max_width": Change(16, observe="stage1"), "encoder_perceptual_weight": Change(0.1, observe="stage1"),
    "encoder_latent_weight": Change(0.5, observe="stage1"),
    "perceptual_size": Change(32, {"encoder_perceptual_weight": 0.1}),
}
# the encoder inverts in one forward pass: eq. 4's weight enters only the loss it reports
CHANGES["encoder"] = {**_ENCODER, "perceptual_weight": Change(0.1, observe="loss")}
CHANGES["idinvert"] = {**_ENCODER, "perceptual_weight": Change(0.1), "perceptual_size": Change(32, PW),
                       "iterations": Change(4), "lr": Change(0.01), "domain_weight": Change(0.5)}

#: settings that leave the result unchanged by design: (the test that checks what they do, why)
COVERED: dict[tuple[str, str], tuple[str, str]] = {
    ("single-code", "execution"): ("test_precision.py::test_reference_mode_solves_the_same_problem_at_a_higher_cost",
                                   "the seeds' per-image pattern: the same optimisation at a higher cost"),
    ("mganprior", "execution"): ("test_precision.py::test_reference_mode_of_the_multi_code_methods",
                                 "the seeds' per-image pattern: the same optimisation at a higher cost"),
    ("pmsfc", "execution"): ("test_precision.py::test_reference_mode_of_the_multi_code_methods",
                             "the seeds' per-image pattern: the same optimisation at a higher cost"),
    ("pmsfc", "s_matrix"): ("test_pmsfc.py::test_imported_s_matrix",
                            "a path to the official S; replaces discovery (needs a file)"),
}
GENERATOR = {"image2stylegan": "stylegan2"}  # the others run on the tiny DCGAN (no PixelNorm: /N acts)


def _cases() -> list[Any]:
    return [pytest.param(m, k, id=f"{m}-{k}") for m in sorted(CHANGES) for k in CHANGES[m]]


@functools.cache
def _cache_dir() -> str:
    return scratch_folder("gib-settings-act-")


def _run(method: str, settings: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    G = tiny_generator(GENERATOR.get(method, "dcgan-digiface64"))
    m = suite_method(method).with_settings(**dict(settings))
    m.prepare(G, seed=0, cache_dir=_cache_dir())
    with torch.no_grad():
        targets = G(G.sample_latents(2, seed=[101, 202])).clamp(-1, 1)
    result = m.invert(G, targets, seeds=[1, 2])
    latents = {f"latent {k}": v for k, v in result.latents.items()}
    return {"result": {"reconstructions": result.reconstructions, **latents}, "loss": result.loss_history,
            "stage1": getattr(m, "S_", getattr(m, "weights_", None))}


_run_cached = functools.lru_cache(maxsize=4)(_run)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() != b.keys() or any(_differs(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6)
    return bool(a != b)


@pytest.mark.parametrize("method,key", _cases())
def test_changing_a_setting_changes_what_it_governs(method, key):
    change = CHANGES[method][key]
    base = tuple(sorted(change.context.items(), key=lambda kv: kv[0]))
    assert suite_method(method).with_settings(**change.context).get_settings()[key] != change.value, \
        f"{method}.{key}: the change {change.value!r} is the suite's own value"
    before = _run_cached(method, base)
    after = _run(method, tuple(sorted({**change.context, key: change.value}.items())))
    what = {"result": "the result", "loss": "the reported loss", "stage1": "what prepare trains"}[change.observe]
    assert before[change.observe] is not None, f"{method}: nothing to observe as {change.observe!r}"
    assert _differs(before[change.observe], after[change.observe]), \
        f"{method}.{key} = {change.value!r} (context {change.context}) left {what} unchanged"
    if change.observe == "stage1":  # and what it trains reaches the result
        assert _differs(before["result"], after["result"]), f"{method}.{key}: stage 1 changed, the result did not"


@pytest.mark.parametrize("method", sorted(CHANGES))
def test_the_same_settings_give_the_same_result(method):
    """What makes "changed" above mean "the setting acts": the same settings and seeds, run again
    (with the stage-1 cache now filled), give the same numbers."""
    again = _run(method, ())
    first = _run_cached(method, ())
    for what in ("result", "loss", "stage1"):
        same = again[what] is None if first[what] is None else not _differs(first[what], again[what])
        assert same, f"{method}: two runs with the same settings differ in {what}"


def test_every_setting_is_listed():
    for name in METHODS.names():
        fields = {f.name for f in dataclasses.fields(METHODS.get(name).Settings)}
        listed = set(CHANGES.get(name, {})) | {k for m, k in COVERED if m == name}
        assert fields == listed, f"{name}: settings not listed {sorted(fields - listed)} (add each to CHANGES " \
                                 f"in {Path(__file__).name}: a change and the context it acts in, or to " \
                                 f"COVERED), listed but not settings {sorted(listed - fields)}"
        assert not set(CHANGES.get(name, {})) & {k for m, k in COVERED if m == name}


@pytest.mark.parametrize("entry", sorted(COVERED), ids=lambda e: "-".join(e))
def test_each_covered_setting_names_a_test_that_exists(entry):
    where, why = COVERED[entry]
    assert why and _test_exists(where), f"{entry}: {where} does not exist"


def _test_exists(where: str) -> bool:
    """``where`` (``file.py::test_name``) names a test function in this folder."""
    path, test = where.split("::")
    return re.search(rf"^def {re.escape(test)}\(", (TESTS / path).read_text(), re.M) is not None


# ---- generator options -------------------------------------------------------------------------------
#: every factory keyword but weights, tiny and device: (value, context), on the tiny network
GEN_CHANGES: dict[str, dict[str, tuple[Any, dict[str, Any]]]] = {
    "biggan-deep": {"config": ({**TINY_CONFIG, "channel_width": 8}, {}), "class_index": (3, {}),
                    "truncation": (0.8, {}), "seed": (1, {})},
    "dcgan-digiface64": {"seed": (1, {})},
    "dcgan-omniart-eyes128": {"seed": (1, {}), "colour": (2, {})},
    "pggan": {"resolution": (64, {}), "seed": (1, {})},
    "pggan-tiny": {"resolution": (64, {}), "seed": (1, {})},
    "stylegan2": {"resolution": (32, {}), "latent_space": ("w", {}), "truncation": (0.5, {}), "seed": (1, {}),
                  "noise_seed": (1, {}),  # the truncation centre is estimated from these draws:
                  "latent_avg_samples": (100, {"truncation": 0.5}), "latent_avg_seed": (1, {"truncation": 0.5})},
}
GEN_COVERED = {("biggan-deep", "resolution"): "test_generators_biggan.py::test_factory_arguments"}
NOT_OPTIONS = {"weights", "tiny", "device"}  # --weights, the tiny switch, --device


def _generate(name: str, options: dict[str, Any]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    G = GENERATORS.create(name, tiny=True, **options).eval()
    z = G.sample_latents(2, seed=[1, 2])
    with torch.no_grad():
        return {"latent": z, "images": G(z)}


@pytest.mark.parametrize("name,key", [pytest.param(n, k, id=f"{n}-{k}") for n in sorted(GEN_CHANGES)
                                      for k in GEN_CHANGES[n]])
def test_changing_a_generator_option_changes_the_generator(name, key):
    value, context = GEN_CHANGES[name][key]
    assert _differs(_generate(name, context), _generate(name, {**context, key: value})), \
        f"--gen-opt {key}={value!r} (with {context}) left {name}'s latents and images unchanged"


def test_every_generator_option_is_listed_and_reachable_from_the_command_line():
    for name in GENERATORS.names():
        options = {k for k, p in inspect.signature(GENERATORS.get(name)).parameters.items()
                   if p.kind == p.KEYWORD_ONLY} - NOT_OPTIONS
        listed = set(GEN_CHANGES.get(name, {})) | {k for n, k in GEN_COVERED if n == name}
        assert options == listed, f"{name}: options not listed {sorted(options - listed)}, " \
                                  f"listed but not options {sorted(listed - options)}"
        for key, (value, _) in GEN_CHANGES.get(name, {}).items():
            text = json.dumps(value) if isinstance(value, dict) else str(value)
            assert generator_options(name, (f"{key}={text}",)) == {key: value}, f"{name}: --gen-opt {key}={text}"
    for where in GEN_COVERED.values():
        assert _test_exists(where), f"{where} does not exist"


# ---- task settings ----------------------------------------------------------------------------------
TASK_CHANGES: dict[str, dict[str, Any]] = {
    "inpaint": {"mask": "boxes", "ratio": 0.5}, "super-resolve": {"factor": 8}, "denoise": {"sigma": 0.2},
}


def _observe(name: str, settings: dict[str, Any]) -> torch.Tensor:
    task = make_task(name, settings)
    clean = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return task.observe(clean, task.params(clean, seed=3))


@pytest.mark.parametrize("name,key", [pytest.param(n, k, id=f"{n}-{k}") for n in sorted(TASK_CHANGES)
                                      for k in TASK_CHANGES[n]])
def test_changing_a_task_setting_changes_the_observation(name, key):
    value = TASK_CHANGES[name][key]
    assert _differs(_observe(name, {}), _observe(name, {key: value})), \
        f"--set task.{key}={value!r} left {name}'s observation unchanged"


def test_every_task_setting_is_listed():
    for name, cls in TASKS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == set(TASK_CHANGES.get(name, {})), f"task {name}: settings {sorted(fields)}"
