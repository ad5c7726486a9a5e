"""bench/RESULTS.md from bench/results.json (make bench) and bench/gpu_results.json (bench/gpu.sh, when run).

.venv/bin/python -m bench.results     # re-render after copying a GPU run's gpu_results.json here
"""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS_JSON = BENCH / "results.json"
GPU_JSON = BENCH / "gpu_results.json"
RESULTS_MD = BENCH / "RESULTS.md"

TARGETS = {
    "wall": 1.02,  # median wall-time ratio, on a job of a minute or more
    "step": 1.005,  # median steady-state step-time ratio
    "cli": 0.3,  # seconds, unify --help and unify validate
    "packed_padding": 0.02,
    "gpu_unsloth_speed": 1.8,
    "gpu_unsloth_memory": 0.5,
}


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def overhead_section(data: dict) -> list[str]:
    rows = data["results"]
    longest = max(r["native_wall_s"] for r in rows)
    lines = [
        "## 1. unifier against the native program on the same job",
        "",
        f"`{data['recipe']}`, {data['steps']} steps, {data['pairs']} interleaved pairs per backend (order "
        "alternating), each a fresh process: `unify run` against the program `unify prepare` writes for the "
        "same job (`bash RUN_DIR/run.sh`: the trl/unsloth script or the `swift sft` command). Ratios are "
        "medians of the per-pair ratios (unify / native); step time is the median step after the first "
        "fifth, from bench/steptimer (the same timer in both processes).",
        "",
        *_table(
            [
                "backend",
                "unify run",
                "native",
                "wall ratio",
                "step unify",
                "step native",
                "step ratio",
                "peak mem unify",
                "peak mem native",
                "same losses",
            ],
            [
                [
                    r["backend"],
                    f"{r['unify_wall_s']:.1f} s",
                    f"{r['native_wall_s']:.1f} s",
                    f"{r['wall_ratio']:.3f}x",
                    f"{r['unify_step_ms']:.2f} ms",
                    f"{r['native_step_ms']:.2f} ms",
                    f"{r['step_ratio']:.3f}x",
                    f"{r['unify_peak_mb']:.0f} MB",
                    f"{r['native_peak_mb']:.0f} MB",
                    "yes" if r["identical_losses"] else "**no**",
                ]
                for r in rows
            ],
        ),
        "",
        f"- Target wall ratio <= {TARGETS['wall']} on a job of a minute or more: "
        + (
            _verdict(all(r["wall_ratio"] <= TARGETS["wall"] for r in rows))
            if longest >= 60
            else f"the jobs here take {longest:.0f} s (make bench stays under 15 minutes); on them: "
            + _verdict(all(r["wall_ratio"] <= TARGETS["wall"] for r in rows))
            + " (`python -m bench --only overhead --steps 3600` runs minute-long jobs)"
        ),
        f"- Target step ratio <= {TARGETS['step']}: "
        + ", ".join(f"{r['backend']} {_verdict(r['step_ratio'] <= TARGETS['step'])}" for r in rows),
        "",
    ]
    return lines


def cli_section(data: dict) -> list[str]:
    rows = data["results"]
    checked = [r for r in rows if r["command"] in ("unify --help", "unify validate")]
    return [
        "## 2. Command latency",
        "",
        f"Median of {data['repeats']} fresh processes each (interleaved rounds, one warm-up round not "
        f"counted), through the `unify` console script; `validate` and `plan` on `{data['recipe']}` "
        "(validate counts the tokens of every row).",
        "",
        *_table(
            ["command", "median", "over `python -c pass`"],
            [
                [
                    f"`{r['command']}`",
                    f"{r['median_s'] * 1000:.0f} ms",
                    f"{r['over_python_s'] * 1000:+.0f} ms",
                ]
                for r in rows
            ],
        ),
        "",
        f"- Target < {TARGETS['cli']} s for `unify --help` and `unify validate`: "
        + ", ".join(f"{r['command']} {_verdict(r['median_s'] < TARGETS['cli'])}" for r in checked),
        "",
    ]


def data_section(data: dict) -> list[str]:
    norm, tokens, padding = data["normalization"], data["token_counting"], data["padding"]
    packed = next(p for p in padding if p["packing"])
    return [
        "## 3. Data pipeline",
        "",
        f"Generated files of {norm[0]['rows']:,} rows per format (fixed seed) through unifier's data "
        "preparation (read, check every row, convert, shuffle), in one process:",
        "",
        *_table(
            ["format", "rows", "file", "seconds", "rows/s"],
            [
                [
                    r["format"],
                    f"{r['rows']:,}",
                    f"{r['mb']:.1f} MB",
                    f"{r['seconds']:.2f}",
                    f"{r['rows_per_s']:,.0f}",
                ]
                for r in norm
            ],
        ),
        "",
        f"Token counting (`unify validate`'s statistics: chat template + tokenizer.json, no torch) on "
        f"{tokens['rows']:,} messages rows ({tokens['tokens']:,} tokens): {tokens['rows_per_s']:,.0f} rows/s.",
        "",
        "Padding on the bundled chat data (`builtin:tiny-chat`, recipes/tiny-cpu-sft.yaml: batch 4, "
        "max_seq_length 256), counted in the batches of the real peft/trl trainer (its data loader, one "
        "pass), beside `unify validate`'s estimate:",
        "",
        *_table(
            [
                "data.packing",
                "positions",
                "padding",
                "padding fraction",
                "fill of max_seq_length rows",
                "validate's estimate",
            ],
            [
                [
                    str(p["packing"]).lower(),
                    f"{p['positions']:,}",
                    f"{p['padding']:,}",
                    f"{p['padding_fraction']:.1%}" + (" (padding-free)" if p["padding_free"] else ""),
                    f"{p['capacity_fill']:.1%} of {p['sequences']} x {p['max_length']}",
                    f"{p['validate_estimate']:.1%}",
                ]
                for p in padding
            ],
        ),
        "",
        f"- Target < {TARGETS['packed_padding']:.0%} padding with packing: "
        f"{_verdict(packed['padding_fraction'] < TARGETS['packed_padding'])} in the trainer's batches "
        f"({packed['padding_fraction']:.1%}); validate's estimate, which pads the last packed row to "
        f"max_seq_length, says {packed['validate_estimate']:.1%}.",
        "",
    ]


def encoding_section(data: dict) -> list[str]:
    return [
        "## 5. Encoding: unifier's encoder beside trl's and ms-swift's tokenization",
        "",
        f"{data['rows']:,} generated chat rows (system, 1-3 turns, tools on 30%) with {data['model']}, one "
        "process each, the same rows (bench/encoding.py):",
        "",
        *_table(
            ["engine", "gives", "seconds", "rows/s", "unifier's time / its time", "rows with unifier's ids"],
            [
                [
                    e["engine"],
                    e["output"],
                    f"{e['seconds']:.1f}",
                    f"{e['rows_per_s']:,.0f}",
                    f"{e['vs_unifier']:.2f}",
                    f"{e['rows_with_unifiers_ids']:.1%}",
                ]
                for e in data["engines"]
            ],
        ),
        "",
        f"`unify validate` on the same {data['rows']:,} rows (a fresh process: read, check, normalize, encode, "
        f"count): {data['validate_seconds']:.1f} s.",
        "",
    ]


def throughput_section(data: dict) -> list[str]:
    return [
        "## 4. Backend throughput on the CPU (tiny model)",
        "",
        f"`unify run` per backend, {data['steps']} steps, the same data: input tokens (padding included, "
        "the same count on every backend) per second of step time after the first fifth of the steps; "
        "peak resident memory of the process. Ratios to peft.",
        "",
        *_table(
            ["method", "backend", "tokens/s", "vs peft", "step", "peak memory", "vs peft", "final loss"],
            [
                [
                    r["method"],
                    r["backend"],
                    f"{r['tokens_per_s']:,.0f}",
                    f"{r['tokens_per_s_vs_peft']:.2f}x",
                    f"{r['step_ms']:.1f} ms",
                    f"{r['peak_memory_mb']:.0f} MB",
                    f"{r['peak_memory_vs_peft']:.2f}x" if r["peak_memory_vs_peft"] else "-",
                    f"{r['final_loss']:.4f}",
                ]
                for r in data["results"]
            ],
        ),
        "",
        "CPU numbers of a 2-layer model say nothing about GPU speed: unsloth's CPU path is stock "
        "transformers + peft + trl (FACTS.md), and QLoRA on a CPU dequantizes in bitsandbytes' CPU kernels.",
        "",
    ]


def gpu_section(gpu: dict | None) -> list[str]:
    lines = ["## 6. GPU (bench/gpu.sh)", ""]
    bench = (gpu or {}).get("benchmark")
    if not bench or bench["meta"]["mode"] != "gpu":
        return [
            *lines,
            "Not run on a GPU yet: no GPU machine has been lent to a session since the script was written. "
            "`bash bench/gpu.sh` (one command, the wheels of `python -m bench.gpu_wheels` carried; README's "
            "GPU section has the call) measures peft, unsloth and ms-swift on random-initialised Qwen2.5-1.5B "
            "and Qwen3-8B (4-bit QLoRA first, then bf16 LoRA): tokens/s, peak GPU memory, MFU, unifier's memory "
            "estimate against the peak, the same losses, and runs tests/gpu; copy its `gpu_results.json` here "
            "and run `python -m bench.results`. Its CPU smoke mode is tested under the device tool's rules "
            "(tests/test_gpu_bench.py).",
            "",
        ]
    meta = bench["meta"]
    lines += [
        f"{meta['date']}, {meta['device']}, seq_len {meta['seq_len']}, batch {meta['batch']}, "
        f"{meta['steps']} steps ({meta['warmup_steps']} left out), gradient checkpointing on. MFU: "
        f"{meta['flops_formula']}, against the datasheet's {meta['peak_bf16_tflops']} TFLOP/s and (in brackets) "
        f"the {meta.get('measured_bf16_tflops')} TFLOP/s measured there (8192^3 bf16 products).",
        "",
        *_table(
            ["model", "method", "backend", "tokens/s", "peak GPU memory", "estimate", "MFU", "status"],
            [
                [
                    r["model"],
                    r["method"],
                    r["backend"],
                    f"{r['tokens_per_s']:,.0f}" if r["status"] == "ok" else "-",
                    f"{r['peak_memory_gib']:.2f} GiB" if r["status"] == "ok" else "-",
                    f"{r['estimated_gib']:.2f} GiB" if r.get("estimated_gib") else "-",
                    (f"{r['mfu']:.1%}" if r.get("mfu") else "-")
                    + (f" ({r['mfu_measured_peak']:.1%})" if r.get("mfu_measured_peak") else ""),
                    r["status"]
                    + (f" ({r.get('reason') or r.get('exit_code')})" if r["status"] != "ok" else ""),
                ]
                for r in bench["runs"]
            ],
        ),
        "",
    ]
    for ratio in bench.get("ratios", []):
        if ratio["backend"] == "unsloth" and ratio["method"] == "qlora":
            speed, memory = ratio["tokens_per_s_vs_peft"], ratio["peak_memory_vs_peft"]
            lines.append(
                f"- {ratio['model']} QLoRA, unsloth vs peft: {speed:.2f}x tokens/s (target >= "
                f"{TARGETS['gpu_unsloth_speed']}: {_verdict(speed >= TARGETS['gpu_unsloth_speed'])}), "
                f"{memory:.2f}x peak memory (target <= {TARGETS['gpu_unsloth_memory']}: "
                f"{_verdict(memory <= TARGETS['gpu_unsloth_memory'])}), per-step losses within "
                f"{ratio.get('loss_max_relative_difference')} (relative)"
            )
    codes = gpu.get("exit_codes", {})
    checks = gpu.get("gpu_checks") or {}
    lines += [
        "",
        f"tests/gpu exit code: {codes.get('gpu_checks')} {' '.join(checks.get('summary') or [])}.",
        "",
    ]
    return lines


def render(results: dict, gpu: dict | None) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{meta['command']}` on {meta['date']} at commit {meta['commit']} ({meta['minutes']} min). "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}, Python "
        f"{m['python']}, torch {m['torch']}"
        + (f", {m['gpu']}" if m.get("gpu") else ", no GPU")
        + ". Raw numbers: bench/results.json. Timings are of this machine only: compare the ratios.",
        "",
        *([f"**Note:** {meta['note']}", ""] if meta.get("note") else []),
    ]
    sections = (
        ("overhead", overhead_section),
        ("cli", cli_section),
        ("data", data_section),
        ("throughput", throughput_section),
        ("encoding", encoding_section),
    )
    for key, section in sections:
        if key in results:
            lines += section(results[key])
    lines += gpu_section(gpu)
    return "\n".join(lines).rstrip() + "\n"


def write_results(results: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    gpu = json.loads(GPU_JSON.read_text()) if GPU_JSON.is_file() else None
    RESULTS_MD.write_text(render(results, gpu))


if __name__ == "__main__":
    write_results(json.loads(RESULTS_JSON.read_text()))
    print(f"wrote {RESULTS_MD}")
