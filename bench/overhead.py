"""unifier vs the native tool on the same job: wall time and training throughput, side by side.

    .venv/bin/python bench/overhead.py [--recipe recipes/tiny-cpu-sft.yaml] [--backends peft,swift,unsloth]
                                       [--repeats 3] [--steps 30]

For each backend: `unify run` (spec -> data normalization -> plan -> native run -> run folder), then the
native program unifier printed for it (`unify plan`: the standalone trl/unsloth script, or the
`swift sft` command) on the same normalized data, each in a fresh process, alternating, `--repeats`
times. Prints median wall times and ratios (unify / native); >1 means unifier costs that much more.
Writes runs/bench/overhead.json. Timings are of this machine only; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
NATIVE_LOGS = {
    "peft": "checkpoints/log_history.json",
    "unsloth": "checkpoints/log_history.json",
    "swift": "checkpoints/logging.jsonl",
}


def timed(args: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args[:6])} ...\n{result.stderr[-3000:]}")
    return elapsed


def native_losses(folder: Path, backend: str) -> list[float]:
    path = folder / NATIVE_LOGS[backend]
    if backend == "swift":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = json.loads(path.read_text())
    return [row["loss"] for row in rows if "loss" in row]


def bench_backend(backend: str, recipe: Path, steps: int, repeats: int, work: Path, env: dict) -> dict:
    unify = [sys.executable, "-m", "unifier.cli"]
    overrides = ["--set", f"training.max_steps={steps}", "--set", "output.if_exists=overwrite"]
    via_unify, native = [], []
    for _ in range(repeats):
        run_dir, native_dir = work / f"{backend}-unify", work / f"{backend}-native"
        via_unify.append(
            timed(
                [*unify, "run", str(recipe), "-b", backend, *overrides, "--set", f"output.dir={run_dir}"],
                env,
                work,
            )
        )
        shutil.rmtree(native_dir, ignore_errors=True)
        shutil.copytree(run_dir / "data", native_dir / "data")
        plan = subprocess.run(
            [*unify, "plan", str(recipe), "-b", backend, *overrides, "--set", f"output.dir={native_dir}"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if plan.lstrip().startswith(("import", "#")) and "def main" in plan:
            script = native_dir / "train.py"
            script.write_text(plan)
            native.append(timed([sys.executable, str(script)], env, work))
        else:
            script = native_dir / "train.sh"
            script.write_text("set -e\n" + plan)
            native.append(timed(["bash", str(script)], env, work))
    unify_metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    same_losses = [m["loss"] for m in unify_metrics if m.get("loss") is not None] == native_losses(
        native_dir, backend
    )
    return {
        "backend": backend,
        "unify_s": statistics.median(via_unify),
        "native_s": statistics.median(native),
        "ratio": statistics.median(via_unify) / statistics.median(native),
        "runs": repeats,
        "unify_all_s": via_unify,
        "native_all_s": native,
        "identical_losses": same_losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny-cpu-sft.yaml"))
    parser.add_argument("--backends", default="peft,swift,unsloth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench"))
    args = parser.parse_args()
    work = Path(args.output).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "UNIFIER_CACHE": os.environ.get("UNIFIER_CACHE", str(ROOT / ".ci-cache")),
    }
    results = [
        bench_backend(b.strip(), Path(args.recipe).absolute(), args.steps, args.repeats, work, env)
        for b in args.backends.split(",")
        if b.strip()
    ]
    table = Table(
        title=f"unifier vs native, {Path(args.recipe).name}, {args.steps} steps, median of {args.repeats}"
    )
    for column in ("backend", "unify run", "native", "ratio (unify / native)", "same per-step losses"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in results:
        table.add_row(
            r["backend"],
            f"{r['unify_s']:.1f} s",
            f"{r['native_s']:.1f} s",
            f"{r['ratio']:.2f}x",
            "yes" if r["identical_losses"] else "NO",
        )
    Console().print(table)
    (work / "overhead.json").write_text(
        json.dumps({"recipe": args.recipe, "steps": args.steps, "results": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
