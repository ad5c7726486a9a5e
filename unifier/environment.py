"""Facts about this machine, read without importing torch: CUDA visibility, library versions, host."""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import shutil
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "unifier",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "ms-swift",
    "unsloth",
    "unsloth_zoo",
    "deepspeed",
    "pydantic",
)


def cuda_visible() -> bool:
    """A CUDA device is visible (nvidia-smi or the driver's proc file), judged without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def training_device(requested: str) -> str:
    """compute.device resolved on this machine: 'cpu' or 'cuda'."""
    if requested != "auto":
        return requested
    return "cuda" if cuda_visible() else "cpu"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(Exception):  # no passwd entry in some containers
        info["user"] = getpass.getuser()
    torch = sys.modules.get("torch")
    if torch is not None:
        info["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def peak_memory_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB
    except Exception:
        return None
