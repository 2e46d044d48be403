#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then pytest (arguments are passed on).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-env.sh"
cd "$ROOT"
# Two worker processes of one torch thread each (pytest-xdist): on a 2-core CPU much of the suite is
# single-threaded (subprocesses, SQLite, hypothesis), so one process left a core idle. GIB_TEST_WORKERS=0
# runs it in one process with torch's default threads.
workers="${GIB_TEST_WORKERS:-2}"
if [ "$workers" != "0" ]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    exec python -m pytest -n "$workers" --dist load "$@"
fi
exec python -m pytest "$@"
