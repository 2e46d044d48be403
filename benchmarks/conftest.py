"""pytest-benchmark suites. Run with (see README, "Performance regressions"):

    python -m pytest benchmarks --benchmark-enable --benchmark-json=new.json
    gib bench-compare new.json benchmarks/baselines/<machine>.json

The root pytest settings disable benchmarks by default (``--benchmark-disable``) so the test
suite never times anything; ``--benchmark-enable`` turns them on here.
"""
