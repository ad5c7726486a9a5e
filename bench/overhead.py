"""unifier vs the native tool on the same job: wall time, steady-state step time and peak memory.

    .venv/bin/python -m bench.overhead [--recipe recipes/tiny-cpu-sft.yaml] [--backends peft,swift,unsloth]
                                       [--pairs 5] [--steps 800]

For each backend, `pairs` interleaved pairs (the order alternates: unify first, then native first), each
process fresh: `unify run` (spec -> data normalization -> plan -> native run -> run folder, plot) and the
native program unifier printed for it (`unify plan`: the standalone trl/unsloth script, or the `swift sft`
command) on the same normalized data. Step times come from bench/steptimer (the same timer in both
processes). Reported: median of the per-pair ratios unify / native (>1: unifier costs that much more) of
wall time and of the median step time after warm-up, peak memory of each, and whether both logged the same
per-step losses. Timings are of this machine only: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from .common import ROOT, UNIFY, bench_env, steady_step_time, timed

NATIVE_LOGS = {
    "peft": "checkpoints/log_history.json",
    "unsloth": "checkpoints/log_history.json",
    "swift": "checkpoints/logging.jsonl",
}


def native_losses(folder: Path, backend: str) -> list[float]:
    path = folder / NATIVE_LOGS[backend]
    if backend == "swift":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = json.loads(path.read_text())
    return [row["loss"] for row in rows if "loss" in row]


def unify_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row["loss"] for row in rows if row.get("loss") is not None]


def native_command(backend: str, recipe: Path, overrides: list[str], native_dir: Path) -> list[str]:
    """`unify prepare`: the normalized data and the backend's own program (run.sh), without unifier around it."""
    subprocess.run(
        [*UNIFY, "prepare", str(recipe), "-b", backend, *overrides, "--set", f"output.dir={native_dir}"],
        env=bench_env(),
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return ["bash", str(native_dir / "run.sh")]


def bench_backend(backend: str, recipe: Path, steps: int, pairs: int, work: Path) -> dict:
    overrides = ["--set", f"training.max_steps={steps}", "--set", "output.if_exists=overwrite"]
    run_dir, native_dir = work / f"{backend}-unify", work / f"{backend}-native"
    unify_run = [*UNIFY, "run", str(recipe), "-b", backend, *overrides, "--set", f"output.dir={run_dir}"]
    warm_up = [*unify_run[:-2], "--set", f"output.dir={work / 'warm-up'}", "--set", "training.max_steps=5"]
    timed(warm_up, bench_env(), ROOT, work / "logs" / f"{backend}-warm-up.log")  # file caches; not counted
    native = native_command(backend, recipe, overrides, native_dir)
    samples = {"unify": [], "native": []}
    for index in range(pairs):
        order = ("unify", "native") if index % 2 == 0 else ("native", "unify")
        for kind in order:
            steps_folder = work / "steps" / f"{backend}-{kind}-{index}"
            shutil.rmtree(steps_folder, ignore_errors=True)
            if kind == "native":
                shutil.rmtree(native_dir / "checkpoints", ignore_errors=True)
            wall, peak = timed(
                unify_run if kind == "unify" else native,
                bench_env(steps_folder),
                ROOT,
                work / "logs" / f"{backend}-{kind}-{index}.log",
            )
            samples[kind].append({"wall_s": wall, "peak_mb": peak, "step_s": steady_step_time(steps_folder)})
    return summarize(
        backend, steps, samples, same_losses(unify_losses(run_dir), native_losses(native_dir, backend))
    )


def same_losses(ours: list[float], theirs: list[float]) -> bool:
    """Every step's loss within 1e-4 relative (ms-swift's logging.jsonl rounds to 4 decimals)."""
    return len(ours) == len(theirs) and all(
        abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(ours, theirs)
    )


def summarize(backend: str, steps: int, samples: dict, identical: bool) -> dict:
    def median(kind: str, key: str) -> float | None:
        values = [s[key] for s in samples[kind] if s[key] is not None]
        return statistics.median(values) if values else None

    def ratio(key: str) -> float | None:
        pairs = [u[key] / n[key] for u, n in zip(samples["unify"], samples["native"]) if u[key] and n[key]]
        return statistics.median(pairs) if pairs else None

    return {
        "backend": backend,
        "steps": steps,
        "pairs": len(samples["unify"]),
        "unify_wall_s": median("unify", "wall_s"),
        "native_wall_s": median("native", "wall_s"),
        "wall_ratio": ratio("wall_s"),
        "unify_step_ms": 1000 * (median("unify", "step_s") or 0),
        "native_step_ms": 1000 * (median("native", "step_s") or 0),
        "step_ratio": ratio("step_s"),
        "unify_peak_mb": median("unify", "peak_mb"),
        "native_peak_mb": median("native", "peak_mb"),
        "identical_losses": identical,
        "samples": samples,
    }


def run(recipe: Path, backends: list[str], steps: int, pairs: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for backend in backends:
        print(f"overhead: {backend}, {pairs} pairs of {steps} steps", file=sys.stderr, flush=True)
        results.append(bench_backend(backend, recipe, steps, pairs, work))
    return {"recipe": str(recipe.relative_to(ROOT)), "steps": steps, "pairs": pairs, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny-cpu-sft.yaml"))
    parser.add_argument("--backends", default="peft,swift,unsloth")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "overhead"))
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    result = run(Path(args.recipe).absolute(), backends, args.steps, args.pairs, Path(args.output).absolute())
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "results"}
            | {"results": [{k: v for k, v in r.items() if k != "samples"} for r in result["results"]]},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
