"""Backend throughput side by side on the same recipe: input tokens per second of step time, peak memory.

    .venv/bin/python -m bench.throughput [--backends peft,swift,unsloth] [--steps 200]

`unify run` per backend on recipes/tiny-cpu-sft.yaml (LoRA) and recipes/tiny-cpu-qlora.yaml (QLoRA,
bitsandbytes NF4), the same data and steps. Tokens are the trainers' `num_input_tokens_seen` (the
same count on every backend, padding included), over the summed step times of metrics.jsonl with the
first fifth of the steps left out (warm-up); peak memory is run.json's (the process's peak resident
memory on CPU; `torch.cuda.max_memory_allocated` on a GPU). Ratios are to the peft backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import ROOT, UNIFY, bench_env, timed

RECIPES = {"lora": "recipes/tiny-cpu-sft.yaml", "qlora": "recipes/tiny-cpu-qlora.yaml"}


def measured(run_dir: Path, warmup: float = 0.2) -> dict:
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    steps = [m for m in metrics if m.get("loss") is not None and m.get("step_time")]
    start = int(len(steps) * warmup)
    before = steps[start - 1]["tokens_seen"] if start else 0
    tokens = steps[-1]["tokens_seen"] - before
    seconds = sum(m["step_time"] for m in steps[start:])
    record = json.loads((run_dir / "run.json").read_text())
    return {
        "steps": steps[-1]["step"],
        "tokens_per_s": tokens / seconds,
        "step_ms": 1000 * seconds / (len(steps) - start),
        "peak_memory_mb": (record.get("final_metrics") or {}).get("peak_memory_mb"),
        "final_loss": steps[-1]["loss"],
    }


def run(backends: list[str], steps: int, work: Path) -> dict:
    results = []
    for method, recipe in RECIPES.items():
        for backend in backends:
            print(f"throughput: {backend} {method}, {steps} steps", file=sys.stderr, flush=True)
            run_dir = work / f"{method}-{backend}"
            args = [*UNIFY, "run", recipe, "-b", backend, "--set", f"training.max_steps={steps}"]
            args += ["--set", "output.if_exists=overwrite", "--set", f"output.dir={run_dir}"]
            timed(args, bench_env(), ROOT, work / "logs" / f"{method}-{backend}.log")
            results.append({"method": method, "backend": backend, "recipe": recipe, **measured(run_dir)})
    for row in results:
        peft = next(r for r in results if r["method"] == row["method"] and r["backend"] == "peft")
        row["tokens_per_s_vs_peft"] = row["tokens_per_s"] / peft["tokens_per_s"]
        row["peak_memory_vs_peft"] = (
            row["peak_memory_mb"] / peft["peak_memory_mb"]
            if row["peak_memory_mb"] and peft["peak_memory_mb"]
            else None
        )
    return {"steps": steps, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="peft,swift,unsloth")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "throughput"))
    args = parser.parse_args()
    backends = ["peft"] + [b for b in args.backends.split(",") if b.strip() and b.strip() != "peft"]
    print(json.dumps(run(backends, args.steps, Path(args.output).absolute()), indent=2))


if __name__ == "__main__":
    main()
