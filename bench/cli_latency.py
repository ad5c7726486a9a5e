"""How long the everyday commands take to answer: median wall time of fresh processes, against `python -c pass`.

    .venv/bin/python -m bench.cli_latency [--repeats 10]

The commands run in interleaved rounds (one warm-up round not counted) through the `unify` console
script a user types. None of them may import torch or transformers, so each should cost little more
than the interpreter's own start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import PYTHON, ROOT, bench_env

RECIPE = "recipes/tiny-cpu-sft.yaml"


def commands() -> dict[str, list[str]]:
    unify = str(Path(PYTHON).parent / "unify")
    return {
        "python -c pass": [PYTHON, "-c", "pass"],
        "unify --help": [unify, "--help"],
        "unify validate": [unify, "validate", RECIPE],
        "unify plan": [unify, "plan", RECIPE, "-b", "peft", "-q"],
        "unify schema": [unify, "schema"],
    }


def run(repeats: int = 10) -> dict:
    env = bench_env()
    times: dict[str, list[float]] = {name: [] for name in commands()}
    for round_index in range(repeats + 1):
        for name, args in commands().items():
            started = time.perf_counter()
            result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if result.returncode != 0:
                sys.exit(
                    f"{name} failed ({result.returncode}):\n{result.stdout[-1500:]}{result.stderr[-1500:]}"
                )
            if round_index:  # the first round warms the file cache
                times[name].append(elapsed)
    baseline = statistics.median(times["python -c pass"])
    return {
        "repeats": repeats,
        "recipe": RECIPE,
        "results": [
            {
                "command": name,
                "median_s": statistics.median(values),
                "over_python_s": statistics.median(values) - baseline,
                "all_s": values,
            }
            for name, values in times.items()
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    result = run(parser.parse_args().repeats)
    for row in result["results"]:
        print(
            f"{row['command']:<16} {row['median_s'] * 1000:7.0f} ms  (+{row['over_python_s'] * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
