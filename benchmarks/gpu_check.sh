#!/usr/bin/env bash
# The GPU speed check of issue 5, as ONE prepared script for a session with an H100/H200:
#
#   bash benchmarks/gpu_check.sh                 # results into $OUT (the device tool's folder) or
#                                                # benchmarks/results/gpu-<date>/ when OUT is unset
#   GIB_GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # the same logic, tiny sizes, any machine (CPU)
#   bash benchmarks/gpu_check.sh --methods pmsfc      # extra arguments go to benchmarks/speed_check.py
#
# On the GPU: PGGAN-256 with random weights (PGGAN(resolution=256).init_random(0); real weights
# are not available offline), every method at the paper's defaults (single-code and mGANprior
# N=30, l=6: 3000 iterations; PmSFC as released: 20 000), reference (the seeds' per-image pattern)
# against batched at fp32/tf32/bf16, then torch.compile, CUDA graphs and channels-last; per-iteration
# cost from two iteration counts, extrapolated to the paper's; achieved TFLOP/s and fraction of
# peak; PSNR against fp32 after the timed runs and after a longer quality run. PmSFC (released) starts
# its codes from the prior (init='normal') instead of z = 0: z = 0 is a dead point of a PGGAN with zero
# biases (its random initialisation), where the gradient overflows; the init does not change the cost. Writes
# gpu_check.json, gpu_check.md (the Markdown table, also printed), nvidia-smi.txt and log.txt into
# $OUT. A time budget inside skips what no longer fits, so the whole script stays under ~7.5
# minutes on an H100 (the hard limit below; GIB_GPU_CHECK_DEADLINE and GIB_GPU_CHECK_LIMIT shorten
# both for a tighter device budget); the JSON is written after every measurement.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONUNBUFFERED=1
OUT="${OUT:-$ROOT/benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# Python: the project's .venv when it works here, else python3 (the GPU machine's image has torch).
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1; then PY=.venv/bin/python; else PY=python3; fi
fi
# The package: installed, or importable from this checkout through a folder of links that maps
# methods/ and generators/ into the package (as setup.cfg's package_dir does), without pip.
if ! "$PY" -c "import gan_inversion_bench.methods.single_code" >/dev/null 2>&1; then
    SHIM="$(mktemp -d)/site"
    mkdir -p "$SHIM/gan_inversion_bench"
    for f in "$ROOT"/gan_inversion_bench/*; do ln -s "$f" "$SHIM/gan_inversion_bench/$(basename "$f")"; done
    ln -s "$ROOT/methods" "$SHIM/gan_inversion_bench/methods"
    ln -s "$ROOT/generators" "$SHIM/gan_inversion_bench/generators"
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import gan_inversion_bench, torch; print('gan_inversion_bench', gan_inversion_bench.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
(nvidia-smi || echo "no nvidia-smi") > "$OUT/nvidia-smi.txt" 2>&1

if [ "${GIB_GPU_CHECK_TINY:-0}" = "1" ]; then
    # Tiny: the script's logic on any machine in about a minute (pggan-tiny, 32x32, few codes and iterations).
    ARGS=(--generator pggan-tiny --device auto --n-images 2 --reference-images 1 --n1 1 --n2 2
          --variants fp32,reference,tf32,bf16 --late-variants bf16+channels-last
          --quality-iters 3 --quality-images 2 --max-wait 0 --retries 0 --deadline 120
          --set single-code.perceptual_size=32 --set mganprior.perceptual_size=32 --set mganprior.n_codes=4
          --set 'pmsfc.init="normal"')
    LIMIT=300
else
    ARGS=(--generator pggan256-random --device cuda --n-images 32 --reference-images 2 --n1 10 --n2 30
          --variants fp32,reference,tf32,bf16 --late-variants bf16+compile,bf16+cudagraphs,bf16+channels-last
          --quality-iters 300 --quality-images 4 --set 'pmsfc.init="normal"' --deadline "${GIB_GPU_CHECK_DEADLINE:-300}")
    LIMIT="${GIB_GPU_CHECK_LIMIT:-450}"
fi
# Extra arguments override the defaults above (argparse keeps the last), e.g. --methods pmsfc.
timeout -s INT "$LIMIT" "$PY" benchmarks/speed_check.py "${ARGS[@]}" "$@" --out "$OUT/gpu_check.json" \
    --markdown "$OUT/gpu_check.md" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
    echo "gpu_check: speed_check exited with $rc (124/130: the $LIMIT s limit); partial results in $OUT/gpu_check.json" >&2
fi
# The conformance checks on the GPU's code paths (issue 13: batch = alone on CUDA): every method's
# batch-equals-alone check on every tiny generator, with GIB_TEST_DEVICE; 120 s at most, skipped when
# pytest is missing or GIB_GPU_CHECK_CONFORMANCE=0. Its outcome goes to $OUT/conformance.txt and does
# not change the exit code (a failure there is a finding, not a broken speed check).
if [ "${GIB_GPU_CHECK_CONFORMANCE:-1}" = "1" ] && "$PY" -c "import pytest" >/dev/null 2>&1; then
    DEV=cuda; [ "${GIB_GPU_CHECK_TINY:-0}" = "1" ] && DEV=auto
    GIB_TEST_DEVICE="$DEV" timeout -s INT 120 "$PY" -m pytest -q -o addopts="" -p no:cacheprovider -m "not slow" \
        tests/test_method_conformance.py -k "batch_equals_alone or gpu" > "$OUT/conformance.txt" 2>&1
    echo "gpu_check: conformance on $DEV exited with $? ($(tail -n 1 "$OUT/conformance.txt")); see $OUT/conformance.txt"
fi
echo "gpu_check: results in $OUT"
exit "$rc"
