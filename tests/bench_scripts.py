"""The scripts of benchmarks/ (a folder, not a package) loaded as modules, for the tests that drive them, and the
environment of the tests that launch processes (torchrun, scripts)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    """benchmarks/NAME.py, executed afresh as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def launch_env(**extra: str) -> dict[str, str]:
    """This process's environment for a launched test process: one torch thread, no GPU, and none of the torchrun
    variables a surrounding launcher may have set (a launched torchrun sets its own); ``extra`` on top."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **extra}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env
