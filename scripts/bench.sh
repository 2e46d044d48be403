#!/usr/bin/env bash
# The default benchmark: sets up .venv if needed, then `gib run` (arguments are passed on).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-env.sh"
cd "$ROOT"
exec gib run "$@"
