"""`make bench`: the CPU benchmarks (items 1-5 of README.md's "Benchmarks"), then bench/RESULTS.md rewritten.

    .venv/bin/python -m bench [--only overhead,cli,data,encoding,throughput] [--pairs 5] [--steps 800]

Raw numbers go to bench/results.json (committed beside RESULTS.md, so the tables can be re-rendered and
diffed); scratch runs to runs/bench/. A run of a subset (--only) keeps the other sections' previous numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from . import cli_latency, data_pipeline, encoding, overhead, throughput
from .common import ROOT, git_commit, machine
from .results import RESULTS_JSON, write_results

SECTIONS = ("overhead", "cli", "data", "throughput", "encoding")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--backends", default="peft,swift,unsloth")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved unify/native pairs per backend")
    parser.add_argument("--steps", type=int, default=800, help="steps of each overhead run")
    parser.add_argument("--throughput-steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000, help="generated rows per data format")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--note", default="", help="a line for RESULTS.md about how this run was made")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        sys.exit(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("UNIFIER_CACHE", str(ROOT / ".ci-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work).absolute()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    started = time.perf_counter()
    if "overhead" in only:
        results["overhead"] = overhead.run(
            ROOT / "recipes" / "tiny-cpu-sft.yaml", backends, args.steps, args.pairs, work / "overhead"
        )
    if "cli" in only:
        print("cli latency", file=sys.stderr, flush=True)
        results["cli"] = cli_latency.run()
    if "data" in only:
        results["data"] = data_pipeline.run(args.rows, 10_000, work / "data")
    if "encoding" in only:
        results["encoding"] = encoding.run(args.rows, work / "encoding")
    if "throughput" in only:
        results["throughput"] = throughput.run(
            ["peft"] + [b for b in backends if b != "peft"], args.throughput_steps, work / "throughput"
        )
    results["meta"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine(),
        "command": "make bench" if sys.argv[1:] == [] else "python -m bench " + " ".join(sys.argv[1:]),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "sections_run": only,
        "note": args.note,
    }
    write_results(results)
    print(f"wrote {RESULTS_JSON.relative_to(ROOT)} and bench/RESULTS.md ({results['meta']['minutes']} min)")


if __name__ == "__main__":
    main()
