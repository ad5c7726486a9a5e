"""`unify compare`, running: one recipe trained on each backend in its own process (unsloth patches
transformers/trl/peft on import), every backend attempted, a failure reported instead of raised."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console


def backend_folder(output: Path, backend: str, name: str, overrides: list[str]) -> Path:
    """Where compare trains `backend`: under --output, or where a `--set output.dir=...` says ({backend} and
    {name} filled in; a folder per backend below it when it names no {backend})."""
    asked = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].strip() == "output.dir"]
    if not asked:
        return (output / backend).absolute()
    chosen = asked[-1].strip().strip("'\"")
    folder = Path(chosen.replace("{name}", name).replace("{backend}", backend))
    return (folder if "{backend}" in chosen else folder / backend).absolute()


def run_backends(
    recipe: Path, backends: list[str], output: Path, overrides: list[str], console: Console, name: str = "run"
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Train the recipe on each backend in its own process; every backend is attempted. Returns the folders
    of the runs that completed and, for each that did not, what went wrong."""
    folders, failures = [], []
    for index, backend in enumerate(backends, 1):
        folder = backend_folder(output, backend, name, overrides)
        args = [
            sys.executable,
            "-m",
            "unifier.cli",
            "run",
            str(recipe),
            "--backend",
            backend,
            *[part for override in overrides for part in ("--set", override)],
            "--set",
            f"output.dir={folder}",
            "--set",
            "output.if_exists=overwrite",
            "--set",
            "output.probe=true",
        ]
        console.print(
            f"[bold]{backend}[/] ({index}/{len(backends)}): training in its own process into {folder} ..."
        )
        started = time.monotonic()
        result = subprocess.run(args, capture_output=True, text=True, env={**os.environ})
        log = output / f"{backend}.log"
        log.write_text(result.stdout + result.stderr)
        took = time.monotonic() - started
        if result.returncode == 0:
            console.print(f"[bold]{backend}[/]: completed in {took:.1f}s")
            folders.append(folder)
            continue
        lines = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("error:", "training failed:"))]
        message = " ".join((errors or lines[-1:] or ["(no output)"])[:3])
        failures.append(
            {"backend": backend, "exit_code": result.returncode, "message": message, "log": str(log)}
        )
        console.print(
            f"[bold]{backend}[/]: [red]failed[/] (exit {result.returncode}) after {took:.1f}s: {message}"
        )
    return folders, failures
