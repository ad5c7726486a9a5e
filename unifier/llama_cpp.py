"""llama.cpp for `unify export --format gguf`: its converter into this environment, and its Python bindings.

    python -m unifier.llama_cpp [--bindings]

Downloads the llama-cpp-python source release (PyPI; it vendors llama.cpp), copies llama.cpp's own converter
(convert_hf_to_gguf.py, its conversion/ package and gguf-py/, the versions that belong together) into
<environment>/share/llama.cpp, where `unify export` finds it, with two real tokenizers (models/ggml-vocab-qwen2,
-llama-bpe) and the official chat templates (models/templates/) that unifier/real_vocab.py builds test models
from, and with --bindings builds and installs the
bindings (`llama_cpp`, a CPU build; the tests load the GGUF with them). `make setup` runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python; tests/test_after_training.py checks GGUFs written with its converter
# the converter, and the real tokenizers and official chat templates unifier/real_vocab.py builds test models from
PARTS = (
    "convert_hf_to_gguf.py",
    "conversion/",
    "gguf-py/",
    "LICENSE",
    "models/templates/",
    "models/ggml-vocab-qwen2.gguf",
    "models/ggml-vocab-llama-bpe.gguf",
)
CPU_BUILD = "-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"


def install(bindings: bool, constraints: str | None = None) -> Path:
    target = Path(sys.prefix) / "share" / "llama.cpp"
    with tempfile.TemporaryDirectory() as scratch:
        pip = [sys.executable, "-m", "pip"]
        subprocess.run(
            [
                *pip,
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={VERSION}",
                "-d",
                scratch,
            ],
            check=True,
        )
        sdist = next(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        staging = Path(scratch) / "llama.cpp"
        with tarfile.open(sdist) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(PARTS)
            ]
            for member in members:
                member.name = member.name[len(prefix) :]
            archive.extractall(staging, members=members, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, target)
        if bindings:
            env = {
                **os.environ,
                "CMAKE_ARGS": CPU_BUILD,
                "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
            }
            extra = ["-c", constraints] if constraints else []
            subprocess.run([*pip, "install", "--quiet", *extra, str(sdist)], check=True, env=env)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", action="store_true", help="also build and install llama_cpp (CPU)")
    parser.add_argument("--constraints", help="a pip constraints file for the bindings' dependencies")
    args = parser.parse_args()
    print(f"llama.cpp converter in {install(args.bindings, args.constraints)}")


if __name__ == "__main__":
    main()
