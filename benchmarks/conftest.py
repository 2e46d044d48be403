"""pytest-benchmark suites. Run with (see README, "Performance regressions"):

    python -m pytest benchmarks --benchmark-enable --benchmark-json=new.json
    gib bench-compare new.json benchmarks/baselines/<machine>.json

The root pytest settings disable benchmarks by default (``--benchmark-disable``) so the test
suite never times anything; ``--benchmark-enable`` turns them on here.
"""
from __future__ import annotations

from gan_inversion_bench.perf import CALIBRATION


def pytest_collection_modifyitems(session, config, items):
    """The machine calibration (``test_calibration.py``) brackets the suite: ``[start]`` runs first,
    ``[end]`` last, so the speed it measures covers the whole run."""
    start = [i for i in items if CALIBRATION in i.nodeid and "[start]" in i.nodeid]
    end = [i for i in items if CALIBRATION in i.nodeid and "[end]" in i.nodeid]
    rest = [i for i in items if i not in start and i not in end]
    items[:] = start + rest + end
