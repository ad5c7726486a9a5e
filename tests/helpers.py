"""Helpers for tests that stop and resume real runs (shared by the resume and multi-process tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .conftest import read_jsonl, run_folder_of, unify


def losses(folder: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_jsonl(folder / "metrics.jsonl") if m.get("loss") is not None}


def adapter_difference(a: Path, b: Path) -> float:
    from safetensors.numpy import load_file

    x, y = (
        load_file(str(a / "adapter" / "adapter_model.safetensors")),
        load_file(str(b / "adapter" / "adapter_model.safetensors")),
    )
    assert set(x) == set(y)
    return max(float(abs(x[k] - y[k]).max()) for k in x)


def start(recipe: Path, backend: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "unifier.cli", "run", str(recipe), "--backend", backend, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def kill_after_checkpoint(recipe: Path, backend: str, step: int) -> Path:
    folder = run_folder_of(recipe, backend)
    process = start(recipe, backend)
    wait_for(folder / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json", process)
    process.kill()
    process.wait()
    wait_unlocked(folder)
    return folder


def wait_unlocked(folder: Path, timeout: float = 120) -> None:
    """A killed unify's training processes (torchrun) hold the folder's lock until they have stopped."""
    import fcntl

    deadline = time.monotonic() + timeout
    with open(folder / ".unifier.lock") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return
            except OSError:
                assert time.monotonic() < deadline, "the folder stayed locked"
                time.sleep(0.2)


def assert_resumed_like(folder: Path, reference: Path, steps: int) -> None:
    """A killed-and-resumed run: completed, each step logged once, the uninterrupted run's losses and adapter."""
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["resumes"][0]["from_step"] >= 8
    assert record["data"]["tokens"]["trained_tokens"] > 0  # resume runs run's token checks and records them
    logged = [m["step"] for m in read_jsonl(folder / "metrics.jsonl") if m.get("loss") is not None]
    assert logged == list(range(1, steps + 1))  # each step once
    assert losses(folder) == losses(reference)  # bit-exact on CPU fp32, every step
    assert adapter_difference(folder, reference) == 0.0
    assert len(list((folder / "checkpoints").glob("checkpoint-*"))) <= 2  # save_total_limit


def kill_and_resume(recipe: Path, backend: str) -> Path:
    folder = kill_after_checkpoint(recipe, backend, 8)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "running" and not (folder / "adapter").exists()  # died mid-run
    resumed = unify("resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return folder
