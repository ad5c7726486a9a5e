"""What every benchmark shares: the environment of a timed process, timing with peak memory, the machine."""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMER = ROOT / "bench" / "steptimer"
PYTHON = sys.executable
UNIFY = [PYTHON, "-m", "unifier.cli"]


def bench_env(step_times: Path | None = None) -> dict[str, str]:
    """Offline, this venv first on PATH; with step_times, every Python process records its step times."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}",
        "UNIFIER_CACHE": os.environ.get("UNIFIER_CACHE", str(ROOT / ".ci-cache")),
    }
    if step_times is not None:
        step_times.mkdir(parents=True, exist_ok=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STEP_TIMER), os.environ.get("PYTHONPATH")]))
        env["UNIFIER_BENCH_STEP_TIMES"] = str(step_times)
    return env


def timed(args: list[str], env: dict, cwd: Path, log: Path) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB, the largest of the process and its children) of a command."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(
            f"failed ({process.returncode}): {' '.join(map(str, args[:8]))} ...\n{log.read_text()[-3000:]}"
        )
    return elapsed, usage.ru_maxrss / 1024


def steady_step_time(folder: Path, warmup: float = 0.2) -> float | None:
    """Median step time of the process that took the most steps, its first `warmup` fraction left out."""
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    if not records:
        return None
    stamps = max(records, key=lambda r: len(r["stamps"]))["stamps"]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    kept = intervals[int(len(intervals) * warmup) :]
    return statistics.median(kept) if kept else None


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    memory = next(
        (line.split()[1] for line in _read("/proc/meminfo").splitlines() if "MemTotal" in line), None
    )
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 2**20, 1) if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return (result.stdout.strip() or "unknown") + ("+changes" if dirty.strip() else "")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
