"""Backend throughput on a GPU with models of real size, built locally (no hub): tokens/s, peak memory, MFU.

    python bench/gpu_bench.py --out DIR [--cpu-smoke] [--models qwen2.5-1.5b,qwen3-8b]
                              [--backends peft,unsloth,swift] [--methods lora,qlora] [--steps 12]

Run by bench/gpu.sh (which installs the carried wheels first). For each model: a random-initialised
checkpoint with the published dimensions (unifier.memory.KNOWN_CONFIGS, real vocabulary size) and a
word-level tokenizer of that vocabulary size, written to --work; random token rows of a fixed length
(`text` rows of `seq_len - 1` tokens; trl appends EOS). Then `unify run` per backend and method (bf16 LoRA,
4-bit NF4 QLoRA), each in its own process, gradient checkpointing on, and from the run folder: input
tokens per second of step time (the first steps left out), peak GPU memory (torch.cuda.max_memory_allocated),
MFU, and unifier's memory estimate beside the measured peak. A backend whose packages are missing is
recorded as skipped. One deadline holds for everything (--deadline, or now + --budget-s; bench/gpu.sh sets it
under the device tool's 10 minutes per command): a model is built only if a run after it fits, a run starts only
if the time left holds one (estimated from the runs so far, --estimate before the first), and every process gets
at most the time left as its timeout. The most valuable rows come first: QLoRA on peft and unsloth (unsloth's GPU
path against the reference: tokens/s, peak memory, the same losses), each run's memory estimate beside its
peak, bf16 LoRA and ms-swift, then tests/gpu, then the next model. Results: DIR/gpu_results.json, rewritten
after every step, and DIR/logs.tar.gz (every log); nothing else is written to DIR.

MFU counts model FLOPs of LoRA training per token: 4 x (matmul parameters) (forward, and the backward
pass for activations; the frozen weights get no weight gradient) + 12 x layers x seq_len x attention
width (attention scores and values, forward and backward); recomputation under gradient checkpointing is
not counted. Two MFUs: against the datasheet's dense bf16 rate (H100/H200 SXM: 989 TFLOP/s) and against the
rate measured on the machine at the start (an 8192^3 bf16 matrix product: about 780 on the device tool's H200).

--cpu-smoke runs the same code on the CPU at a small size (2 layers, hidden 64, the real vocabulary) in
fp32 so that the script is tested where no GPU is (tests/test_gpu_bench.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unifier.memory import KNOWN_CONFIGS  # noqa: E402

MODELS = {
    "qwen2.5-1.5b": ("Qwen2ForCausalLM", "qwen2", KNOWN_CONFIGS["Qwen/Qwen2.5-1.5B"]),
    "qwen3-8b": ("Qwen3ForCausalLM", "qwen3", KNOWN_CONFIGS["Qwen/Qwen3-8B"]),
}
SMOKE_DIMENSIONS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
NEEDS = {
    "peft": ("torch", "transformers", "peft", "trl", "datasets", "accelerate"),
    "unsloth": ("unsloth", "unsloth_zoo", "trl", "peft"),
    "swift": ("swift",),
}
QLORA_NEEDS = ("bitsandbytes",)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "bitsandbytes",
        "unsloth",
        "unsloth_zoo",
        "ms-swift",
        "pydantic",
        "typer",
        "rich",
        "PyYAML",
        "matplotlib",
        "jinja2",
        "tokenizers",
        "safetensors",
    }
    found = {}
    for name in sorted(names):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def missing_packages() -> list[str]:
    """Distributions the backends need that this Python lacks (bench/gpu_packages.py's walk)."""
    from bench.gpu_packages import closure

    return sorted(name for name, found in closure().items() if not found)


def missing_for(backend: str, method: str) -> list[str]:
    needed = NEEDS[backend] + (QLORA_NEEDS if method == "qlora" else ())
    return [m for m in needed if importlib.util.find_spec(m) is None]


def build_model(name: str, folder: Path, smoke: bool, device: str) -> dict:
    """A random-initialised checkpoint with the model's dimensions and a tokenizer of its vocabulary size."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    architecture, model_type, dims = MODELS[name]
    dims = {**dims, **(SMOKE_DIMENSIONS if smoke else {})}
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return json.loads((folder / "config.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = word_vocabulary(dims["vocab_size"])
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tokenizer.save_pretrained(folder)
    config = AutoConfig.for_model(
        model_type,
        architectures=[architecture],
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **dims,
    )
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return json.loads((folder / "config.json").read_text())


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _word(index: int) -> str:
    """The index-th four-letter word (26**4 of them)."""
    return "".join(LETTERS[(index // 26**k) % 26] for k in (3, 2, 1, 0))


def word_vocabulary(size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary of exactly `size` tokens in which " abcd" (space + four letters) is one
    token: transformers 5 loads a Qwen2 folder's tokenizer as Qwen2Tokenizer (byte-level BPE, Qwen2's split
    pattern) whatever tokenizer_config.json says, so the tokenizer must be one that class rebuilds the same."""
    space = "\u0120"  # byte-level BPE's character for " "
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for char in [space, *LETTERS]:
        vocab[char] = len(vocab)
    prefixes = [space]
    for _ in range(3):  # " a".." z", " aa".., " aaa"..
        longer = [p + c for p in prefixes for c in LETTERS]
        for token in longer:
            vocab[token] = len(vocab)
            merges.append((token[:-1], token[-1]))
        prefixes = longer
    whole = size - len(vocab) - len(SPECIALS)
    if whole <= 0 or whole > 26**4:
        raise ValueError(f"vocabulary size {size} is out of range")
    for index in range(whole):
        token = space + _word(index)
        vocab[token] = len(vocab)
        merges.append((token[:-1], token[-1]))
    for special in SPECIALS:
        vocab[special] = len(vocab)
    return vocab, merges


def words_in_vocabulary(vocab_size: int) -> int:
    return vocab_size - len(SPECIALS) - (27 + 26 + 26**2 + 26**3)


def write_rows(path: Path, vocab_size: int, seq_len: int, rows: int) -> None:
    """Random rows of seq_len - 1 tokens each (trl appends EOS): " abcd efgh ..." with one token per word."""
    rng = random.Random(0)
    words = words_in_vocabulary(vocab_size)
    with path.open("w") as handle:
        for _ in range(rows):
            text = "".join(" " + _word(rng.randrange(words)) for _ in range(seq_len - 1))
            handle.write(json.dumps({"text": text}) + "\n")


def recipe(model_dir: Path, data: Path, method: str, args, run_dir: Path) -> dict:
    raw = {
        "name": f"gpu-bench-{method}",
        "model": {
            "name_or_path": str(model_dir),
            "dtype": "float32" if args.cpu_smoke else "bfloat16",
            "max_seq_length": args.seq_len,
        },
        "adapter": {"type": method, "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [{"path": str(data), "format": "text"}], "shuffle": False, "packing": False},
        "training": {
            "method": "sft",
            "max_steps": args.steps,
            "learning_rate": 1e-4,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
            "optimizer": "adamw_torch",
            "per_device_batch_size": args.batch,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": True,
            "logging_steps": 1,
            "seed": 0,
        },
        "compute": {"device": "cpu" if args.cpu_smoke else "cuda", "nproc_per_node": 1},
        "output": {"dir": str(run_dir), "if_exists": "overwrite", "save": "adapter"},
    }
    if method == "qlora":
        raw["quantization"] = {
            "bits": 4,
            "quant_type": "nf4",
            "double_quant": True,
            "compute_dtype": "float32" if args.cpu_smoke else "bfloat16",
        }
    return raw


def model_flops_per_token(config: dict, seq_len: int) -> float:
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o; k, v
    matmul = layers * (attention + 3 * h * inter) + h * config["vocab_size"]  # + lm_head
    return 4 * matmul + 12 * layers * seq_len * heads * head_dim


def peak_tflops(device_name: str | None) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if device_name and k in device_name), None)


def measure(run_dir: Path, warmup_steps: int) -> dict:
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    steps = [m for m in metrics if m.get("loss") is not None and m.get("step_time")]
    kept = steps[warmup_steps:] or steps[-1:]
    before = steps[len(steps) - len(kept) - 1]["tokens_seen"] if len(kept) < len(steps) else 0
    seconds = sum(m["step_time"] for m in kept)
    record = json.loads((run_dir / "run.json").read_text())
    return {
        "steps": steps[-1]["step"] if steps else 0,
        "tokens_per_s": (kept[-1]["tokens_seen"] - before) / seconds,
        "step_ms": 1000 * seconds / len(kept),
        "peak_memory_gib": ((record.get("final_metrics") or {}).get("peak_memory_mb") or 0) / 1024,
        "final_loss": steps[-1]["loss"] if steps else None,
        "losses": [m["loss"] for m in steps],
        "backend_details": record.get("backend_details"),
        "wall_s": record.get("wall_time_s"),
    }


def estimated_gib(recipe_path: Path) -> float | None:
    from unifier.memory import GIB, estimate_for
    from unifier.spec import load_spec

    try:
        estimate = estimate_for(load_spec(recipe_path))
    except Exception as exc:  # the estimate is a side note; never lose the measurement to it
        print(f"memory estimate failed: {exc}", file=sys.stderr)
        return None
    return estimate.total / GIB if estimate else None


def measured_bf16_tflops() -> float:
    """The dense bf16 matrix rate of this GPU, measured (8192^3 products, median of 10 after 3 warm-ups): the
    device tool's H200 gives 770-800 TFLOP/s against the datasheet's 989."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del a, b
    torch.cuda.empty_cache()
    return 2 * 8192**3 / sorted(times)[len(times) // 2] / 1e12


class Deadline:
    """One deadline for the whole command (the device tool allows 10 minutes per call): nothing starts that the
    time left cannot hold (estimated from the runs so far), and every process gets at most the time left."""

    RESERVE_S = 15  # for writing the results and the log archive after the last step

    def __init__(self, at: float):
        self.at = at

    def left(self) -> float:
        return self.at - time.time() - self.RESERVE_S

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds

    def timeout(self, limit: float) -> float:
        return max(1.0, min(limit, self.left()))


def plan_steps(args) -> list[tuple]:
    """What to measure, most valuable first: per model, QLoRA on peft and unsloth (unsloth's GPU path against
    the reference, same losses), the rest of the model's rows (bf16 LoRA, ms-swift), then, after the first
    model, the GPU checks (tests/gpu); the next model's rows last."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rank = {"peft": 0, "unsloth": 1, "swift": 2}
    steps: list[tuple] = []
    for index, model in enumerate(models):
        rows = [(model, method, backend) for method in methods for backend in backends]
        rows.sort(
            key=lambda r: (
                r[1] != "qlora" or r[2] not in ("peft", "unsloth"),
                r[1] != "lora",
                rank.get(r[2], 9),
            )
        )
        steps += [("build", model), *(("run", *row) for row in rows)]
        if index == 0 and args.checks:
            steps.append(("checks",))
    if not models and args.checks:
        steps.append(("checks",))
    return steps


class Results:
    """$OUT/gpu_results.json, rewritten after every step (a timeout keeps what was measured), and the full logs
    as $OUT/logs.tar.gz: two files, within the device tool's 8."""

    def __init__(self, out: Path, logs: Path, meta: dict):
        self.out, self.logs = out, logs
        self.data = {
            "benchmark": {"meta": meta, "runs": [], "ratios": []},
            "gpu_checks": None,
            "exit_codes": {},
        }

    @property
    def runs(self) -> list[dict]:
        return self.data["benchmark"]["runs"]

    def save(self) -> None:
        import tarfile

        self.data["benchmark"]["ratios"] = ratios(self.runs)
        self.data["benchmark"]["meta"]["seconds"] = round(
            time.time() - self.data["benchmark"]["meta"]["started"], 1
        )
        partial = self.out / ".gpu_results.json.partial"
        partial.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        partial.replace(self.out / "gpu_results.json")
        with tarfile.open(self.out / ".logs.tar.gz.partial", "w:gz") as archive:
            for log in sorted(self.logs.glob("*.log")):
                archive.add(log, arcname=log.name)
        (self.out / ".logs.tar.gz.partial").replace(self.out / "logs.tar.gz")


def run_checks(args, deadline: Deadline, work: Path, env: dict, log: Path) -> dict:
    """tests/gpu (run_gpu_checks.sh, which finds the wheels already installed) with the time left."""
    results = work / "checks.json"
    results.unlink(missing_ok=True)
    check_env = {**env, "UNIFIER_GPU_RESULTS": str(results), "OUT": str(work / "checks")}
    timeout = deadline.timeout(args.checks_timeout_s)
    begun = time.time()
    try:
        with log.open("w") as handle:
            code = subprocess.run(
                ["bash", "tests/gpu/run_gpu_checks.sh"], env=check_env, cwd=ROOT, stdout=handle,
                stderr=subprocess.STDOUT, timeout=timeout,
            ).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        code = "timeout"
    text = log.read_text(errors="replace")
    return {
        "exit_code": code,
        "timeout_s": round(timeout, 1),
        "seconds": round(time.time() - begun, 1),
        "results": json.loads(results.read_text()) if results.is_file() else None,
        "summary": [line for line in text.splitlines() if " passed" in line or " skipped" in line][-1:],
        "log_tail": text[-2500:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu-bench"))
    parser.add_argument("--work", default=os.environ.get("UNIFIER_GPU_WORK", "/tmp/unifier-gpu-bench"))
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--models", default="qwen2.5-1.5b,qwen3-8b")
    parser.add_argument("--backends", default="peft,unsloth,swift")
    parser.add_argument("--methods", default="qlora,lora")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup-steps", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--deadline", type=float, default=float(os.environ.get("UNIFIER_GPU_DEADLINE", 0)) or None,
        help="epoch seconds by which everything has ended (bench/gpu.sh sets it); default now + --budget-s",
    )  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--run-timeout-s", type=float, default=300)
    parser.add_argument("--checks-timeout-s", type=float, default=240)
    parser.add_argument("--no-checks", dest="checks", action="store_false", help="leave tests/gpu out")
    parser.add_argument(
        "--estimate", action="append", default=[], metavar="MODEL=SECONDS",
        help="the expected seconds of one run of MODEL before any has run (a build counts one more)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.cpu_smoke:
        args.seq_len, args.batch, args.steps, args.warmup_steps = (
            min(args.seq_len, 64),
            1,
            min(args.steps, 4),
            1,
        )
    started = time.time()
    deadline = Deadline(args.deadline or started + args.budget_s)
    estimates = {**(SMOKE_ESTIMATES if args.cpu_smoke else GPU_ESTIMATES)}
    for item in args.estimate:
        name, _, seconds = item.partition("=")
        estimates[name.strip()] = float(seconds)
    out, work = Path(args.out), Path(args.work)
    logs = work / "logs"
    for folder in (out, work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        sys.exit("no CUDA GPU here: bench/gpu.sh runs on a GPU machine, or pass --cpu-smoke")
    gpu = cuda and not args.cpu_smoke
    device_name = torch.cuda.get_device_name(0) if gpu else None
    results = Results(
        out,
        logs,
        {
            "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "started": started,
            "deadline_s": round(deadline.at - started, 1),
            "device": device_name or "cpu",
            "peak_bf16_tflops": peak_tflops(device_name),
            "measured_bf16_tflops": round(measured_bf16_tflops(), 1) if gpu else None,
            "packages": package_versions(),
            "missing_packages": missing_packages(),
            "seq_len": args.seq_len,
            "batch": args.batch,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "flops_formula": "4 x matmul params + 12 x layers x seq_len x attention width, per token",
            "unifier_from": str(Path(__import__("unifier").__file__).parent),
        },
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
    }
    if args.cpu_smoke:
        env.pop("UNSLOTH_DISABLE_CPU_FALLBACK", None)
    else:
        env["UNSLOTH_DISABLE_CPU_FALLBACK"] = "1"  # a GPU number must come from unsloth's GPU path
    built: dict[str, tuple[dict, Path]] = {}
    took: dict[str, list[float]] = {}

    def expected(model: str) -> float:
        seen = took.get(model)
        return 1.25 * max(seen) if seen else estimates.get(model, estimates["default"])

    for step in plan_steps(args):
        if step[0] == "checks":
            if not deadline.allows(estimates["checks"]):
                results.data["gpu_checks"] = {
                    "exit_code": "skipped",
                    "reason": "the time left cannot hold them",
                }
            else:
                results.data["gpu_checks"] = run_checks(args, deadline, work, env, logs / "gpu_checks.log")
            results.data["exit_codes"]["gpu_checks"] = results.data["gpu_checks"]["exit_code"]
            results.save()
            continue
        model = step[1]
        if step[0] == "build":
            # the model is built only if one run after the build still fits
            if deadline.allows(2 * expected(model)):
                model_dir = work / f"{model}{'-smoke' if args.cpu_smoke else ''}"
                config = build_model(model, model_dir, args.cpu_smoke, "cuda" if gpu else "cpu")
                data = work / f"{model}-{args.seq_len}.jsonl"
                write_rows(data, config["vocab_size"], args.seq_len, (args.steps + 1) * args.batch)
                built[model] = (config, data)
            continue
        _, model, method, backend = step
        row = {"model": model, "method": method, "backend": backend}
        results.runs.append(row)
        missing = missing_for(backend, method)
        if missing:
            row.update(status="skipped", reason=f"not installed here: {', '.join(missing)}")
        elif model not in built:
            row.update(status="skipped", reason="the time left could not hold building the model and a run")
        elif not deadline.allows(expected(model)):
            row.update(status="skipped", reason=f"the time left ({deadline.left():.0f} s) cannot hold a run "
                       f"(about {expected(model):.0f} s)")  # fmt: skip
        else:
            run_one(
                row, args, built[model], work, logs, env, deadline, gpu, results.data["benchmark"]["meta"]
            )
            took.setdefault(model, []).append(row["process_s"])
        results.save()
    failed = [r for r in results.runs if r["status"] == "failed"]
    checks = results.data["gpu_checks"]
    results.data["exit_codes"]["benchmark"] = (
        1 if failed or not any(r["status"] == "ok" for r in results.runs) else 0
    )
    results.save()
    for row in results.runs:
        summary = (
            f"{row.get('tokens_per_s', 0):9.0f} tok/s  {row.get('peak_memory_gib', 0):6.2f} GiB"
            f"  estimate {row.get('estimated_gib') or 0:6.2f} GiB"
            if row["status"] == "ok"
            else f"{row['status']}: {row.get('reason') or row.get('exit_code')}"
        )
        print(f"{row['model']:<14} {row['method']:<6} {row['backend']:<8} {summary}")
    for ratio in results.data["benchmark"]["ratios"]:
        print(f"{ratio['model']} {ratio['method']} {ratio['backend']}/peft: {ratio['tokens_per_s_vs_peft']:.2f}x tok/s, "
              f"losses within {ratio['loss_max_relative_difference']}")  # fmt: skip
    if checks:
        print(f"tests/gpu: {checks['exit_code']} {' '.join(checks.get('summary') or [])}")
    print(f"gpu run: {time.time() - started:.0f} s -> {out / 'gpu_results.json'}")
    checks_ok = checks is None or checks["exit_code"] in (0, "skipped")
    sys.exit(results.data["exit_codes"]["benchmark"] or (0 if checks_ok else 1))


def run_one(row, args, model_files, work, logs, env, deadline, gpu, meta) -> None:
    """One `unify run` in its own process, with at most the time left, measured from its run folder."""
    (config, data), (model, method, backend) = model_files, (row["model"], row["method"], row["backend"])
    model_dir = work / f"{model}{'-smoke' if args.cpu_smoke else ''}"
    run_dir = work / "runs" / f"{model}-{method}-{backend}"
    recipe_path = work / f"{model}-{method}-{backend}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe(model_dir, data, method, args, run_dir)))
    log = logs / f"{model}-{method}-{backend}.log"
    print(
        f"gpu bench: {model} {method} {backend} ({deadline.left():.0f} s left)", file=sys.stderr, flush=True
    )
    timeout = deadline.timeout(args.run_timeout_s)
    row["timeout_s"], row["left_at_start_s"] = round(timeout, 1), round(deadline.left(), 1)
    begun = time.time()
    try:
        with log.open("w") as handle:
            code = subprocess.run(
                [sys.executable, "-m", "unifier.cli", "run", str(recipe_path), "-b", backend, "-v"],
                env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
            ).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        code = "timeout"
    row["process_s"] = round(time.time() - begun, 1)
    if code != 0:
        row.update(status="failed", exit_code=code, log_tail=log.read_text(errors="replace")[-2500:])
        return
    row.update(status="ok", **measure(run_dir, args.warmup_steps))
    row["estimated_gib"] = estimated_gib(recipe_path)
    flops = model_flops_per_token(config, args.seq_len)
    for key, peak in (("mfu", meta["peak_bf16_tflops"]), ("mfu_measured_peak", meta["measured_bf16_tflops"])):
        row[key] = row["tokens_per_s"] * flops / (peak * 1e12) if peak else None


GPU_ESTIMATES = {"default": 150, "qwen2.5-1.5b": 120, "qwen3-8b": 300, "checks": 150}
SMOKE_ESTIMATES = {"default": 60, "checks": 30}


def ratios(runs: list[dict]) -> list[dict]:
    """unsloth (and swift) against peft, per model and method, where both ran."""
    found = []
    for row in runs:
        if row["backend"] == "peft" or row["status"] != "ok":
            continue
        peft = next(
            (
                r
                for r in runs
                if r["backend"] == "peft"
                and r["model"] == row["model"]
                and r["method"] == row["method"]
                and r["status"] == "ok"
            ),
            None,
        )
        if peft:
            found.append(
                {
                    "model": row["model"],
                    "method": row["method"],
                    "backend": row["backend"],
                    "tokens_per_s_vs_peft": row["tokens_per_s"] / peft["tokens_per_s"],
                    "peak_memory_vs_peft": row["peak_memory_gib"] / peft["peak_memory_gib"]
                    if peft["peak_memory_gib"]
                    else None,
                    "loss_max_relative_difference": loss_difference(peft.get("losses"), row.get("losses")),
                }
            )
    return found


def loss_difference(a: list | None, b: list | None) -> float | None:
    """The largest relative difference of the per-step losses of two runs of the same job (None: not comparable)."""
    if not a or not b or len(a) != len(b):
        return None
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))


if __name__ == "__main__":
    main()
