"""Fixtures shared by several test files."""
from __future__ import annotations

import pytest

from gan_inversion_bench import GENERATORS


@pytest.fixture(scope="module")
def G():
    """The tiny PGGAN the tuning tests search on (one instance per test module)."""
    return GENERATORS.create("pggan-tiny")
