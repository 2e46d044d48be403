"""The conformance suite (gan_inversion_bench.testing) for every registered method on every
registered generator family, generated from the registries: a new method or generator is
checked without editing a list. Plus the checks' own ability to fail."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gan_inversion_bench import testing
from gan_inversion_bench.method import InversionResult
from gan_inversion_bench.methods.single_code import SingleCode


@testing.parametrize_with_checks(generator_checks=False)
def test_conformance(check):
    check()


def test_the_suite_covers_every_registered_method_and_generator():
    from gan_inversion_bench import GENERATORS, METHODS

    ids = {c.id for c in testing.all_checks()}
    for m in METHODS.names():
        assert f"{m}-contract" in ids
        for g in GENERATORS.names():
            assert f"{m}-{g}-seeds" in ids and f"{g}-split_composition" in ids
    assert not any(c.id.endswith("-split_composition") for c in testing.all_checks(generator_checks=False))


class Mutating(SingleCode):
    """A broken method: it changes the caller's generator."""

    name = "test-mutating"

    def invert(self, generator, targets, **kw):
        with torch.no_grad():
            next(generator.parameters()).add_(1.0)
        return super().invert(generator, targets, **kw)


class SeedBlind(SingleCode):
    """A broken method: it ignores the seed but does not say so."""

    name = "test-seed-blind"

    def invert(self, generator, targets, *, seeds=0, progress=None):
        return super().invert(generator, targets, seeds=0, progress=progress)


class Coupled(SingleCode):
    """A broken method: images of a batch influence each other."""

    name = "test-coupled"

    def invert(self, generator, targets, **kw):
        r = super().invert(generator, targets, **kw)
        return InversionResult(r.reconstructions + r.reconstructions.mean(0, keepdim=True) * 0.5, r.latents,
                               r.loss_history + r.loss_history.mean(1, keepdim=True), r.iterations, r.failures)


class LossUnused(SingleCode):
    """A broken method: it builds a ReconstructionLoss on its targets but optimises without the task's D."""

    name = "test-loss-unused"

    def invert(self, generator, targets, **kw):
        from gan_inversion_bench.losses import ReconstructionLoss
        from gan_inversion_bench.tasks import activated

        ReconstructionLoss(targets, perceptual_weight=0.0)
        with activated(None):
            return super().invert(generator, targets, **kw)


@pytest.mark.parametrize("cls,check,message", [
    (LossUnused, testing.check_task_operator_reaches_the_loss, "built a ReconstructionLoss but never evaluated it"),
    (Mutating, testing.check_result_and_no_mutation, "mutated the generator"),
    (SeedBlind, testing.check_seeds, "tag it deterministic"),
    (Coupled, testing.check_batch_equals_alone, "differs from the image alone"),
])
def test_the_checks_catch_broken_methods(cls, check, message):
    G = testing.tiny_generator("pggan-tiny")
    import copy

    case = testing.MethodCase(testing.suite_method(cls).prepare(G), copy.deepcopy(G),
                              testing.method_case("single-code", "pggan-tiny").targets)
    with pytest.raises(AssertionError, match=message):
        check(case)


# ---- the device the suite runs on (GIB_TEST_DEVICE) ---------------------------------------------
def test_the_suite_runs_on_the_cpu_unless_told(monkeypatch):
    monkeypatch.delenv(testing.DEVICE_ENV, raising=False)
    assert testing.suite_device() == torch.device("cpu")
    assert testing.tiny_generator("pggan-tiny").device == torch.device("cpu")
    monkeypatch.setenv(testing.DEVICE_ENV, "  ")
    assert testing.suite_device() == torch.device("cpu")


@pytest.mark.parametrize("value, says", [
    ("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available"),
    ("meta", "holds no data"), ("gpu0", "invalid device"),
])
def test_a_device_this_machine_lacks_is_refused_naming_the_variable(monkeypatch, value, says):
    if torch.cuda.is_available() and value.startswith("cuda"):
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv(testing.DEVICE_ENV, value)
    with pytest.raises(RuntimeError, match=rf"GIB_TEST_DEVICE='{value}': .*{says}.*unset GIB_TEST_DEVICE"):
        testing.tiny_generator("pggan-tiny")
    with pytest.raises(RuntimeError, match="GIB_TEST_DEVICE"):
        testing.method_case("single-code", "pggan-tiny")


def test_cases_are_built_per_device(monkeypatch):
    """The cache is keyed by the device, so a case built for one device is never handed out for another."""
    monkeypatch.setenv(testing.DEVICE_ENV, "cpu")
    case = testing.method_case("single-code", "pggan-tiny")
    assert case.generator.device == case.targets.device == torch.device("cpu")
    assert testing.method_case("single-code", "pggan-tiny") is case
    built = []
    monkeypatch.setattr(testing, "_method_case", lambda *a: built.append(a) or case)
    monkeypatch.setattr(testing, "suite_device", lambda: torch.device("cuda", 1))
    testing.method_case("single-code", "pggan-tiny")
    assert built == [("single-code", "pggan-tiny", testing.BUDGET, "cuda:1")]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["single-code", "ilo", "cma-es", "pivotal-tuning", "image2stylegan"])
def test_batch_equals_alone_on_the_gpu(monkeypatch, method):
    """The GPU code path of the methods whose batching is least obvious (issue 13)."""
    monkeypatch.setenv(testing.DEVICE_ENV, "cuda")
    generator = "stylegan2" if method == "image2stylegan" else "pggan-tiny"
    case = testing.method_case(method, generator)
    assert case.generator.device.type == "cuda"
    testing.check_batch_equals_alone(case)
    testing.check_result_and_no_mutation(case)


def test_the_suites_scratch_folder_is_removed_when_its_process_exits():
    """The suite's preparation cache lives in a temporary folder per process; it must not pile up in /tmp."""
    code = ("import os; from gan_inversion_bench.testing import scratch_folder; p = scratch_folder('gib-check-'); "
            "open(os.path.join(p, 'cached'), 'w').close(); print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).name.startswith("gib-check-")
    assert not Path(out).exists()
