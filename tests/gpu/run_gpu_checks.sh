#!/usr/bin/env bash
# The GPU checks, in one prepared run (README: "GPU checks"). On any CUDA machine with the project
# installed:   bash tests/gpu/run_gpu_checks.sh
# On the lent device machine (no package registry there), carry the wheels fetched beforehand with
# tests/gpu/fetch_wheels.sh: the script installs whatever lies in .whl/ first.
# Results: $OUT/gpu_results.json (or runs/gpu-checks/gpu_results.json) and the pytest log beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-$PWD/runs/gpu-checks}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="/tmp/site/bin:$PATH"
fi
"$PY" -c "import unifier" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu_info.txt" 2>&1 || true
export UNIFIER_GPU_RESULTS="$OUT_DIR/gpu_results.json" UNIFIER_CACHE="${UNIFIER_CACHE:-/tmp/unifier-cache}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
rm -f "$UNIFIER_GPU_RESULTS"
"$PY" -m pytest -p no:cacheprovider -q -rs tests/gpu 2>&1 | tee "$OUT_DIR/gpu_pytest.log"
status=${PIPESTATUS[0]}
echo "gpu checks exit code: $status (results in $UNIFIER_GPU_RESULTS)"
exit "$status"
