"""Encoding speed: rows per second of unifier's encoder against trl's and ms-swift's own tokenization of the same
rows, with a real tokenizer and an official template, and `unify validate` on the whole file.

    .venv/bin/python -m bench.encoding [--rows 100000]

The rows are generated chat conversations (system, 1-3 user/assistant turns, tools on 30% of them; fixed seed,
bench/data_pipeline.py). The model is the Qwen2.5-Instruct test model (unifier/real_vocab.py: the real Qwen2
tokenizer, 151,936 tokens, and Qwen2.5-Instruct's official chat template, from llama.cpp's files). In one
process each, on the same rows:

1. unifier: the encoder every backend trains from (`unifier.data.tokens.encode_rows`): render, tokenize, locate
   every assistant turn of a template without generation marks and check it (the loss mask).
2. trl 0.29: `SFTTrainer._prepare_dataset` (its datasets.map over `apply_chat_template(tokenize=True)`), without
   an assistant mask: trl cannot compute one for a template without generation marks.
3. ms-swift 4.6: `Template.encode` of its `qwen2_5` template in train mode (ids and labels).

Each row's ids are compared with unifier's: the share of rows whose ids are identical is reported.
Then `unify validate` (a fresh process: read, check, normalize and encode every row, count) on the same file.
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
from .data_pipeline import generated_row


def rows_file(folder: Path, rows: int) -> Path:
    path = folder / f"chat-{rows}.jsonl"
    if not path.is_file():
        rng = random.Random(f"encoding-{rows}")
        with path.open("w", encoding="utf-8") as handle:
            for _ in range(rows):
                handle.write(json.dumps(generated_row("messages", rng)) + "\n")
    return path


def _timed(label: str, work) -> tuple[float, object]:
    print(f"  {label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def unifier_encoder(model: Path, rows: list[dict]) -> tuple[float, list[list[int]]]:
    from unifier.data.encode import Encoder, Vocabulary
    from unifier.data.tokens import encode_rows, resolve_template

    vocabulary = Vocabulary.from_folder(model)
    encoder = Encoder(vocabulary, resolve_template("auto", vocabulary, str(model)), max_len=1_000_000)
    locations = [f"row {i + 1}" for i in range(len(rows))]
    seconds, encoded = _timed("unifier", lambda: encode_rows(encoder, "chat", rows, locations))
    return seconds, [e.ids for e in encoded]


def trl_tokenization(model: Path, rows: list[dict], scratch: Path) -> tuple[float, list[list[int]]]:
    from types import SimpleNamespace

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    dataset = Dataset.from_list([{"messages": r["messages"], "tools": r.get("tools")} for r in rows])
    args = SFTConfig(
        output_dir=str(scratch / "trl"),
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
        assistant_only_loss=False,
    )
    trainer = SimpleNamespace(_is_vlm=False)
    seconds, prepared = _timed(
        "trl", lambda: SFTTrainer._prepare_dataset(trainer, dataset, tokenizer, args, False, None, "train")
    )
    return seconds, [list(ids) for ids in prepared["input_ids"]]


def swift_encoding(model: Path, rows: list[dict]) -> tuple[float, list[list[int]]]:
    from swift.model import get_processor
    from swift.template import get_template

    tokenizer = get_processor(str(model), model_type="qwen2", use_hf=True)
    template = get_template(tokenizer, template_type="qwen2_5", agent_template="hermes")
    template.set_mode("train")

    def encode_all():
        return [
            template.encode({"messages": r["messages"], "tools": r.get("tools")})["input_ids"] for r in rows
        ]

    seconds, ids = _timed("ms-swift", encode_all)
    return seconds, ids


def validate_process(model: Path, path: Path, scratch: Path) -> float:
    recipe = scratch / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "encoding-bench",
                "model": {"name_or_path": str(model), "dtype": "float32", "max_seq_length": 4096},
                "adapter": {"type": "lora", "target_modules": "all-linear"},
                "data": {"train": [{"path": str(path), "format": "messages"}]},
                "training": {"epochs": 1},
                "compute": {"device": "cpu"},
            }
        )
    )
    started = time.perf_counter()
    result = subprocess.run(
        [*UNIFY, "validate", str(recipe)], env=bench_env(), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"unify validate failed:\n{result.stderr[-3000:]}")
    return seconds


def run(rows: int, folder: Path) -> dict:
    from unifier import real_vocab

    folder.mkdir(parents=True, exist_ok=True)
    print(f"encoding: {rows} chat rows, Qwen2.5-Instruct tokenizer and template", file=sys.stderr, flush=True)
    model = real_vocab.ensure("qwen2.5")
    path = rows_file(folder, rows)
    data = [json.loads(line) for line in path.read_text().splitlines()]
    results = {"rows": rows, "model": "qwen2.5 (real tokenizer, official template)", "engines": []}
    with tempfile.TemporaryDirectory() as tmp:
        ours_seconds, ours = unifier_encoder(model, data)
        measured = [("unifier encoder", ours_seconds, ours, "ids + assistant mask, every turn checked")]
        trl_seconds, trl_ids = trl_tokenization(model, data, Path(tmp))
        measured.append(("trl SFTTrainer._prepare_dataset", trl_seconds, trl_ids, "ids only (no mask)"))
        swift_seconds, swift_ids = swift_encoding(model, data)
        measured.append(("ms-swift Template.encode (qwen2_5)", swift_seconds, swift_ids, "ids + labels"))
        for name, seconds, ids, output in measured:
            same = sum(a == b for a, b in zip(ids, ours)) / rows
            results["engines"].append(
                {
                    "engine": name,
                    "output": output,
                    "seconds": seconds,
                    "rows_per_s": rows / seconds,
                    "vs_unifier": ours_seconds / seconds,
                    "rows_with_unifiers_ids": same,
                }
            )
        print("  unify validate ...", file=sys.stderr, flush=True)
        results["validate_seconds"] = validate_process(model, path, Path(tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "encoding"))
    args = parser.parse_args()
    print(json.dumps(run(args.rows, Path(args.output)), indent=2))


if __name__ == "__main__":
    main()
