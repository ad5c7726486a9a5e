"""The Python distributions a GPU run needs, and which of them this machine lacks.

    python bench/gpu_packages.py     # on the device machine (bench/gpu.sh runs it): one line per package

The roots are unifier's own requirements and its `peft`, `unsloth` and `swift` extras (pyproject.toml); their
requirements are followed through the installed packages' metadata (markers evaluated for this
interpreter; extras not followed). tests/test_gpu_bench.py applies the same walk to this venv's metadata
and checks that every package is on the GPU image (tests/gpu/image_packages.txt), carried by
bench/gpu_wheels.py or listed there as never imported, except OPTIONAL ones, which the libraries import only
if present.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("peft", "unsloth", "swift")
OPTIONAL = {
    "xformers": "unsloth falls back to PyTorch's attention without it (unsloth/models/_utils.py)",
    "diffusers": "unsloth imports it only for diffusion models",
    "torchvision": "only for vision models; the GPU image has one built for its torch",
    "triton-windows": "Windows only",
    "wheel": "a build tool",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def root_requirements(extras: tuple[str, ...] = EXTRAS) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"])
    for extra in extras:
        roots += [r for r in project["optional-dependencies"][extra] if not r.startswith("unifier")]
    return roots


def installed_requirements(name: str) -> list[str] | None:
    """Requirement strings of an installed distribution, or None when it is not installed."""
    try:
        return list(distribution(name).requires or [])
    except PackageNotFoundError:
        return None


def closure(
    requires_of: Callable[[str], list[str] | None] = installed_requirements, extras: tuple[str, ...] = EXTRAS
) -> dict[str, bool]:
    """Every distribution the roots need, transitively: name -> whether requires_of knew it."""
    from packaging.requirements import Requirement

    seen: dict[str, bool] = {}
    queue = list(root_requirements(extras))
    while queue:
        requirement = Requirement(queue.pop())
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonical(requirement.name)
        if name in seen or name in OPTIONAL:
            continue
        needs = requires_of(name)
        seen[name] = needs is not None
        queue += needs or []
    return seen


def main() -> int:
    from importlib.metadata import version

    needed = closure()
    for name in sorted(needed):
        print(f"{name:<28} {version(name) if needed[name] else 'MISSING'}")
    missing = [n for n, ok in needed.items() if not ok]
    print(
        f"{len(needed)} packages needed, {len(missing)} missing{': ' + ', '.join(missing) if missing else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
