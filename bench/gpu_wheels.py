"""The one wheel bundle a lent GPU machine needs (no package registry there), fetched and trimmed here.

    python -m bench.gpu_wheels          # on a machine with PyPI: .whl/ (git-ignored), its size checked

The device machine (Python 3.12, tests/gpu/image_packages.txt) lacks what CARRIED lists: unifier's own
requirements, trl, bitsandbytes, unsloth, ms-swift and what they import while training. The working tree and the
carried folder must stay under 64 MiB per call, so two wheels are trimmed of what a CUDA 13 training run never
loads: bitsandbytes keeps its CUDA 13.0 and CPU libraries (its other CUDA/ROCm/XPU builds are 39 of its 43 MB),
unsloth drops `studio/` (its web UI, 26 of 29 MB). Versions are this venv's (what the CPU tests ran), except
torchao (the image's torch 2.11 needs an older one).

NOT_CARRIED lists what the libraries declare but a training run does not import (measured: every module a
tiny `unify run` loaded on each backend, LoRA and QLoRA, mapped to its distribution), and with them what only
they need; tests/test_gpu_bench.py
checks that CARRIED + NOT_CARRIED + the image cover the whole requirement closure, with nothing carried twice.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
LIMIT_MIB = 60  # with the working tree (about 1 MiB) under the device tool's 64 MiB per call

CARRIED = (
    # unifier's own requirements the image lacks, and datasets' pinned helpers
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "datasets", "dill", "multiprocess",
    "zstandard",
    # the trl backends and QLoRA
    "trl", "bitsandbytes",
    # unsloth (GPU path: cut_cross_entropy, msgspec, nest_asyncio; tyro & co. are declared, small)
    "unsloth", "unsloth-zoo", "torchao", "cut-cross-entropy", "msgspec", "nest-asyncio", "importlib-metadata",
    "tyro", "docstring-parser", "typeguard",
    # ms-swift and what it imports while training (modelscope's hub code, packing, json repair)
    "ms-swift", "modelscope", "modelscope-hub", "json-repair", "binpacking", "dacite", "cryptography", "cffi",
)  # fmt: skip
PINNED = {"torchao": "0.14.1"}
NOT_CARRIED = {
    name: "declared by ms-swift / modelscope / unsloth, not imported by a training run (measured)"
    for name in (
        "addict", "attrdict", "cpm-kernels", "fastapi", "hf-transfer", "json5", "lazy-importer", "nltk",
        "openai", "oss2", "pycparser", "rouge", "structlog", "transformers-stream-generator", "uvicorn",
    )
}  # fmt: skip
TRIM = {
    "bitsandbytes": lambda name: (
        name.startswith("bitsandbytes/libbitsandbytes_") and not name.endswith(("_cuda130.so", "_cpu.so"))
    ),
    "unsloth": lambda name: name.startswith("studio/"),
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def requirement(name: str) -> str:
    if name in PINNED:
        return f"{name}=={PINNED[name]}"
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def download(names, target: Path) -> None:
    platforms = [part for platform in PLATFORMS for part in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(target),
         *map(requirement, names)],
        check=True,
    )  # fmt: skip


def trim(wheel: Path, drop) -> int:
    """Rewrite the wheel without the members `drop` names (RECORD rewritten to match); bytes saved."""
    before = wheel.stat().st_size
    buffer = io.BytesIO()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        kept = [
            info for info in source.infolist() if not drop(info.filename) and info.filename != record_name
        ]
        rows = []
        for info in kept:
            data = source.read(info)
            out.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([info.filename, f"sha256={digest}", str(len(data))])
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, [record_name, "", ""]])
        out.writestr(record_name, text.getvalue())
    wheel.write_bytes(buffer.getvalue())
    return before - wheel.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=str(WHEELS))
    args = parser.parse_args()
    target = Path(args.target)
    if target.exists():
        for old in target.glob("*.whl"):
            old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/.whl/" not in (exclude.read_text() if exclude.is_file() else ""):
        with exclude.open("a") as handle:
            handle.write("/.whl/\n")
    download(CARRIED, target)
    for wheel in sorted(target.glob("*.whl")):
        project = wheel.name.split("-")[0].replace("_", "-").lower()
        if project in TRIM:
            saved = trim(wheel, TRIM[project])
            print(f"trimmed {wheel.name}: {saved / 2**20:.1f} MiB left out")
    total = sum(w.stat().st_size for w in target.glob("*.whl")) / 2**20
    print(f"{len(list(target.glob('*.whl')))} wheels, {total:.1f} MiB in {target}")
    if total > LIMIT_MIB:
        print(
            f"over {LIMIT_MIB} MiB: the device tool carries 64 MiB per call with the working tree",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
