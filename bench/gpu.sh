#!/usr/bin/env bash
# The GPU run, one prepared script (issue 13): on a GPU machine, backend throughput on models of real size
# (bench/gpu_bench.py), then the GPU checks (tests/gpu), results in $OUT/gpu_results.json.
#   bash bench/gpu.sh                 # on the lent machine: installs the wheels carried in .whl/, runs all
#   bash bench/gpu.sh --install-only  # only install what .whl/ carries (the wheels come in two calls)
#   bash bench/gpu.sh --cpu-smoke     # the same code on this CPU at a small size (tests/test_gpu_bench.py)
# Other arguments go to bench/gpu_bench.py (--models, --backends, --methods, --steps, --budget-s ...).
# On the device machine: fetch wheels here first (bash tests/gpu/fetch_wheels.sh a, then b; see there),
# carry .whl, and keep what gets installed to /tmp/site between the two calls (the machine stays warm).
# Afterwards: copy $OUT/gpu_results.json to bench/gpu_results.json and run `python -m bench.results`,
# which puts it into bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/runs/gpu-bench}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
smoke=0 install_only=0 args=()
for arg in "$@"; do
    case "$arg" in
        --cpu-smoke) smoke=1; args+=("$arg") ;;
        --install-only) install_only=1 ;;
        *) args+=("$arg") ;;
    esac
done
started=$SECONDS
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
if [ -d /tmp/site ]; then
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
fi
"$PY" -c "import unifier" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# what this machine has, beside what unifier needs (recorded; a backend that misses a package is skipped)
"$PY" bench/gpu_packages.py > "$OUT_DIR/packages.txt" 2>&1
cat "$OUT_DIR/packages.txt"
[ "$install_only" = 1 ] && exit 0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu_info.txt" 2>&1 || true
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export UNIFIER_CACHE="${UNIFIER_CACHE:-/tmp/unifier-cache}"
"$PY" bench/gpu_bench.py --out "$OUT_DIR" "${args[@]}"
bench_status=$?
checks_status=skipped
if [ "$smoke" = 0 ]; then
    OUT="$OUT_DIR/checks" PYTHON="$PY" timeout "${UNIFIER_GPU_CHECKS_TIMEOUT:-240}" bash tests/gpu/run_gpu_checks.sh
    checks_status=$?
fi
"$PY" - "$OUT_DIR" "$bench_status" "$checks_status" "$((SECONDS - started))" <<'PYEOF'
import json, sys
from pathlib import Path
out, bench_status, checks_status, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def read(path):
    return json.loads(path.read_text()) if path.is_file() else None
merged = {"benchmark": read(out / "gpu_bench.json"), "gpu_checks": read(out / "checks" / "gpu_results.json"),
          "exit_codes": {"benchmark": bench_status, "gpu_checks": checks_status}, "seconds": seconds}
(out / "gpu_results.json").write_text(json.dumps(merged, indent=2) + "\n")
print(f"gpu run: benchmark exit {bench_status}, gpu checks {checks_status}, {seconds} s -> {out / 'gpu_results.json'}")
PYEOF
[ "$bench_status" = 0 ] && { [ "$checks_status" = 0 ] || [ "$checks_status" = skipped ]; }
