"""The generator checks of gan_inversion_bench.testing, for every registered generator (see
the module for the contract): one pytest item per (generator, check), and the checks' own
ability to fail on broken generators."""
from __future__ import annotations

import pytest

from gan_inversion_bench import testing
from gan_inversion_bench.registry import GENERATORS


@testing.parametrize_with_checks(methods=[])
def test_generator_conformance(check):
    check()


def test_registry_names_the_generators():
    assert {"dcgan-digiface64", "pggan", "pggan-tiny"} <= set(GENERATORS.names())
    for name in GENERATORS.names():
        assert GENERATORS.create(name, tiny=True).name == name


def test_the_checks_catch_broken_generators():
    G = GENERATORS.create("pggan-tiny")
    G.name = ""
    with pytest.raises(AssertionError, match="name is empty"):
        testing.check_attributes_and_output(G)

    class Stateful(type(G)):  # batch statistics: image i depends on the rest of the batch
        def forward(self, z):
            out = super().forward(z)
            return out - out.mean(0, keepdim=True) * 0.1

    bad = GENERATORS.create("pggan-tiny")
    bad.__class__ = Stateful
    with pytest.raises(AssertionError, match="differs from it alone"):
        testing.check_determinism_and_batches(bad)
