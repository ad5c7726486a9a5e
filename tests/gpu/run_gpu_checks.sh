#!/usr/bin/env bash
# The GPU checks (README: "GPU checks and benchmarks"). On any CUDA machine with the project installed:
#   bash tests/gpu/run_gpu_checks.sh        # or: make gpu-check
# bench/gpu.sh runs this after its first model, within its deadline; on the lent device machine the wheels
# carried in .whl/ are installed once (tests/gpu/use_wheels.sh) and not again here.
# Results: $UNIFIER_GPU_RESULTS (default $OUT/gpu_results.json or runs/gpu-checks/gpu_results.json).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-$PWD/runs/gpu-checks}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
source tests/gpu/use_wheels.sh
export UNIFIER_GPU_RESULTS="${UNIFIER_GPU_RESULTS:-$OUT_DIR/gpu_results.json}" UNIFIER_CACHE="${UNIFIER_CACHE:-/tmp/unifier-cache}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
rm -f "$UNIFIER_GPU_RESULTS"
"$PY" -m pytest -p no:cacheprovider -q -rs tests/gpu
status=$?
echo "gpu checks exit code: $status (results in $UNIFIER_GPU_RESULTS)"
exit "$status"
