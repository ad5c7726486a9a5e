#!/usr/bin/env bash
# Fetch, on a machine with PyPI access, the wheels bench/gpu.sh and the GPU checks need on the lent device machine
# (Python 3.12, torch/transformers/peft/accelerate already there, no registry). They land in .whl/
# (ignored by git); pass `carry: [".whl"]` to the device run. The working tree plus carried files must
# stay under 64 MiB per call, and bitsandbytes (43 MB) plus unsloth (29 MB) do not fit together:
#   bash tests/gpu/fetch_wheels.sh a   # bitsandbytes + unifier's and datasets' small needs
#   bash tests/gpu/fetch_wheels.sh b   # unsloth, unsloth_zoo, trl and their small needs
# tests/test_gpu_bench.py checks that these bundles plus the image's packages (tests/gpu/image_packages.txt)
# hold everything unifier's peft and unsloth backends need.
# Run a, then b, into the same warm machine (the script installs into /tmp/site, which survives while
# the machine stays warm): `bash bench/gpu.sh --install-only` with bundle a, then `bash bench/gpu.sh` with b. Not yet exercised on the device: record what was missing in the issue note.
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle="${1:-a}"
rm -rf .whl && mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
case "$bundle" in
    a) packages="bitsandbytes==0.50.2 pydantic pydantic-core annotated-types typing-inspection dill==0.4.0 multiprocess==0.70.18 datasets==4.8.4" ;;
    b) packages="unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==0.29.1 tyro docstring-parser typeguard msgspec hf_transfer cut_cross_entropy torchao==0.14.1 json5 nest-asyncio structlog" ;;
    *) echo "usage: $0 a|b" >&2; exit 2 ;;
esac
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $packages
du -sh .whl
