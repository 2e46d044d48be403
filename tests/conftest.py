"""Fixtures shared by several test files."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

from gan_inversion_bench import GENERATORS

# The property tests draw new examples on every run and keep a failing one in .hypothesis/ to replay. CI
# (.ci/run: GIB_HYPOTHESIS_PROFILE=ci) draws the same examples every time, so whether a change lands does not
# depend on which examples one run happened to draw; the edge cases a developer's runs find become @example.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("GIB_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def G():
    """The tiny PGGAN the tuning tests search on (one instance per test module)."""
    return GENERATORS.create("pggan-tiny")
