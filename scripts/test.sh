#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then pytest (arguments are passed on).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-env.sh"
cd "$ROOT"
exec python -m pytest "$@"
