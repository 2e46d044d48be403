"""The conformance suite (gan_inversion_bench.testing) for every registered method on every
registered generator family, generated from the registries: a new method or generator is
checked without editing a list. Plus the checks' own ability to fail."""
from __future__ import annotations

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


@pytest.mark.parametrize("cls,check,message", [
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
