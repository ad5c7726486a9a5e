"""The run folder every backend writes: run.json, metrics.jsonl, data/, adapter/ or model/, loss.png."""
from __future__ import annotations

import getpass
import json
import platform
import shutil
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError
from .spec import JobSpec

LIBRARIES = ("unifier", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
             "ms-swift", "unsloth", "unsloth_zoo", "deepspeed", "pydantic")
SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey")


def output_dir(spec: JobSpec, backend: str) -> Path:
    return Path(spec.output.dir.format(name=spec.name, backend=backend))


def prepare_folder(path: Path, if_exists: str) -> None:
    """Create the run folder, or refuse before anything is written."""
    if path.exists() and any(path.iterdir()):
        if if_exists == "error":
            raise UserError(f"{path}: run folder already exists",
                            hint="set output.if_exists: overwrite, pass --set output.if_exists=overwrite, or choose another output.dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "python": sys.version.split()[0]}
    try:
        info["user"] = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def redact(value: Any) -> Any:
    """Drop anything that looks like a credential from what is recorded."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def write_run_json(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(redact(record), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(folder / "run.json")


def read_run(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a run folder (no run.json)")
    return json.loads(path.read_text(encoding="utf-8"))
