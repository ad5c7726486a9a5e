"""Data pipeline: rows per second of normalization and of token counting, and padding with/without packing.

    .venv/bin/python -m bench.data_pipeline [--rows 100000] [--token-rows 10000]

1. A generated file of `rows` rows per format (alpaca, sharegpt, messages with tools, text, preference;
   fixed seed) goes through unifier's data preparation (read, check every row, convert to canonical rows,
   shuffle): what `unify validate` and `unify run` do before anything trains.
2. Token counting (`unify validate`'s statistics: chat template + tokenizer, no torch) on `token_rows`
   rows of the messages file, with the tiny model's tokenizer.
3. Padding on the bundled chat data (builtin:tiny-chat, recipes/tiny-cpu-sft.yaml): the batches of the
   real peft/trl trainer (its data loader, one pass over the data) counted position by position, with
   data.packing false and true, next to validate's estimate of the same.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, UNIFY, bench_env

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "have",
    "which",
    "be",
    "or",
    "are",
    "this",
    "not",
    "but",
    "model",
    "data",
    "train",
    "loss",
    "token",
    "batch",
    "layer",
    "weight",
    "adapter",
    "rank",
    "learning",
    "rate",
    "step",
    "epoch",
    "gradient",
    "memory",
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]


def _sentence(rng: random.Random, low: int = 4, high: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def generated_row(fmt: str, rng: random.Random) -> dict:
    if fmt == "alpaca":
        return {"instruction": _sentence(rng), "input": _sentence(rng, 0, 20), "output": _sentence(rng)}
    if fmt == "sharegpt":
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns += [{"from": "human", "value": _sentence(rng)}, {"from": "gpt", "value": _sentence(rng)}]
        return {"conversations": turns}
    if fmt == "messages":
        row = {"messages": [{"role": "system", "content": _sentence(rng, 3, 10)}]}
        for _ in range(rng.randint(1, 3)):
            row["messages"] += [
                {"role": "user", "content": _sentence(rng)},
                {"role": "assistant", "content": _sentence(rng)},
            ]
        if rng.random() < 0.3:
            row["tools"] = TOOLS
        return row
    if fmt == "text":
        return {"text": _sentence(rng, 20, 200)}
    if fmt == "preference":
        return {"prompt": _sentence(rng), "chosen": _sentence(rng), "rejected": _sentence(rng)}
    raise ValueError(fmt)


FORMATS = ("alpaca", "sharegpt", "messages", "text", "preference")


def write_file(folder: Path, fmt: str, rows: int) -> Path:
    path = folder / f"{fmt}-{rows}.jsonl"
    if not path.is_file():
        rng = random.Random(f"{fmt}-{rows}")
        with path.open("w", encoding="utf-8") as handle:
            for _ in range(rows):
                handle.write(json.dumps(generated_row(fmt, rng)) + "\n")
    return path


def _spec(path: Path | str, fmt: str, **data):
    from unifier.spec import load_spec

    method = "dpo" if fmt == "preference" else "sft"
    recipe = ROOT / "recipes" / ("tiny-cpu-dpo.yaml" if method == "dpo" else "tiny-cpu-sft.yaml")
    overrides = [f"data.train=[{{path: '{path}', format: {fmt}}}]", "data.eval_split=0"]
    return load_spec(recipe, overrides=overrides + [f"data.{k}={v}" for k, v in data.items()])


def normalization(folder: Path, rows: int) -> list[dict]:
    from unifier.data.prepare import prepare_data

    results = []
    for fmt in FORMATS:
        path = write_file(folder, fmt, rows)
        spec = _spec(path, fmt)
        started = time.perf_counter()
        prepared = prepare_data(spec)
        elapsed = time.perf_counter() - started
        assert len(prepared.train) == rows, (fmt, len(prepared.train))
        results.append(
            {"format": fmt, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "mb": _mb(path)}
        )
    return results


def token_counting(folder: Path, rows: int) -> dict:
    spec = _spec(write_file(folder, "messages", rows), "messages")
    started = time.perf_counter()
    stats = validate_token_stats(spec)
    elapsed = time.perf_counter() - started
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "tokens": sum(stats.lengths)}


def validate_token_stats(spec):
    """The token statistics `unify validate` prints (the builtin model must exist: a run builds it)."""
    from unifier.data.prepare import prepare_data
    from unifier.data.tokens import check_trainable
    from unifier.model_info import read_model_info

    stats, note = check_trainable(spec, prepare_data(spec), read_model_info(spec.model.name_or_path))
    if stats is None:
        sys.exit(f"no token statistics: {note}")
    return stats


PADDING_PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("program", sys.argv[1])
program = importlib.util.module_from_spec(spec); spec.loader.exec_module(program)
config = program.expand_references(program.CONFIG)
model, tokenizer = program.load_model_and_tokenizer(config)
model = program.add_adapter(model, config)
train_rows, eval_rows = program.load_data(config)
trainer = program.build_trainer(config, model, tokenizer, train_rows, eval_rows, ())
positions = padding = 0
padding_free = False
for batch in trainer.get_train_dataloader():
    positions += batch["input_ids"].numel()
    if "attention_mask" in batch:
        padding += int((batch["attention_mask"] == 0).sum())
    else:  # padding-free (trl's packing): the batch is one flattened row, nothing padded
        padding_free = True
print(json.dumps({"positions": positions, "padding": padding, "real_tokens": positions - padding,
                  "sequences": len(trainer.train_dataset), "max_length": trainer.args.max_length,
                  "padding_free": padding_free}))
"""


def padding() -> list[dict]:
    results = []
    env = bench_env()
    for packing in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "run"
            overrides = ["--set", f"data.packing={str(packing).lower()}", "--set", f"output.dir={folder}"]
            subprocess.run(
                [*UNIFY, "prepare", "recipes/tiny-cpu-sft.yaml", "-b", "peft", *overrides],
                env=env,
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            probe = Path(tmp) / "probe.py"
            probe.write_text(PADDING_PROBE)
            out = subprocess.run(
                [sys.executable, str(probe), str(next((folder / "native").glob("train_*.py")))],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"padding probe failed:\n{out.stderr[-3000:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
        from unifier.spec import load_spec

        stats = validate_token_stats(load_spec(ROOT / "recipes/tiny-cpu-sft.yaml"))
        estimate = stats.packed_padding_fraction if packing else stats.padding_fraction
        results.append(
            {
                "packing": packing,
                **measured,
                "padding_fraction": measured["padding"] / measured["positions"],
                "capacity_fill": measured["real_tokens"] / (measured["sequences"] * measured["max_length"]),
                "validate_estimate": estimate,
            }
        )
    return results


def _mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def run(rows: int, token_rows: int, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    print(f"data pipeline: {rows} rows per format", file=sys.stderr, flush=True)
    return {
        "normalization": normalization(folder, rows),
        "token_counting": token_counting(folder, token_rows),
        "padding": padding(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--token-rows", type=int, default=10_000)
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "data"))
    args = parser.parse_args()
    print(json.dumps(run(args.rows, args.token_rows, Path(args.output)), indent=2))


if __name__ == "__main__":
    main()
