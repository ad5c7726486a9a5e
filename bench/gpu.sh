#!/usr/bin/env bash
# The GPU run, one command for a lent GPU machine (README: "GPU checks and benchmarks"): backend throughput on
# models of real size (bench/gpu_bench.py), then tests/gpu, all inside one deadline, results in
# $OUT/gpu_results.json (rewritten after every step) and $OUT/logs.tar.gz.
#   python -m bench.gpu_wheels                 # here, first: the one wheel bundle, .whl/ (about 37 MiB)
#   bash bench/gpu.sh                          # there: device tool run, carry [".whl"], timeout_s 600
#   bash bench/gpu.sh --cpu-smoke              # the same code on this CPU at a small size (tests/test_gpu_bench.py)
# Other arguments go to bench/gpu_bench.py (--models, --backends, --methods, --steps, --estimate ...).
# UNIFIER_GPU_BUDGET_S (default 540) is the whole command's deadline, under the tool's 600 s per command.
# Afterwards: copy gpu_results.json to bench/gpu_results.json and run `python -m bench.results` (RESULTS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
export UNIFIER_GPU_DEADLINE="${UNIFIER_GPU_DEADLINE:-$((started + ${UNIFIER_GPU_BUDGET_S:-540}))}"
OUT_DIR="${OUT:-$PWD/runs/gpu-bench}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
source tests/gpu/use_wheels.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHON="$PY"
export UNIFIER_CACHE="${UNIFIER_CACHE:-/tmp/unifier-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" bench/gpu_bench.py --out "$OUT_DIR" "$@"
