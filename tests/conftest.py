"""Shared fixtures: the tiny local model, recipe writing, and running the real `unify` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
os.environ.setdefault("UNIFIER_CACHE", str(ROOT / ".ci-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "0")


def unify(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process (backends patch libraries; one process each keeps them apart)."""
    exe = [sys.executable, "-m", "unifier.cli"]
    return subprocess.run(
        [*exe, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def payload_of(plan: dict) -> dict:
    """The backend-specific part of a plan's JSON: a Python program's CONFIG, or a command's argv and env."""
    program = plan["program"]
    if program["type"] == "ScriptProgram":
        return {**program["config"], "data_kind": plan["data_kind"]}
    return {"argv": program["argv"], "env": program["env"], "data_kind": plan["data_kind"]}


def load_recipe(name: str = "tiny-cpu-sft.yaml") -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


def write_recipe(folder: Path, raw: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from unifier.tiny import ensure_tiny_model

    return ensure_tiny_model()


REFERENCE_STEPS = 20


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory):
    """The tiny recipe, 20 steps, trained once per test session on every backend by `unify compare` (each in its
    own process, parity probe on): (exit code, compare.json, log, {backend: run folder}). The parity suite checks
    it; the resume tests compare their resumed runs with it (probe and checkpoint settings do not change
    training)."""
    folder = tmp_path_factory.mktemp("reference")
    raw = load_recipe()
    raw["training"]["max_steps"] = REFERENCE_STEPS
    recipe = write_recipe(folder, raw)
    result = unify(
        "compare",
        str(recipe),
        "--backends",
        "peft,swift,unsloth",
        "--output",
        str(folder / "compare"),
        timeout=1200,
    )
    report_file = folder / "compare" / "compare.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    runs = {run["backend"]: Path(run["folder"]) for run in report.get("runs", [])}
    return result.returncode, report, result.stdout + result.stderr, runs


@pytest.fixture
def tiny_recipe(tmp_path):
    """A factory: the tiny SFT recipe with changes, written under tmp_path, output inside tmp_path."""

    def make(changes: dict | None = None, base: str = "tiny-cpu-sft.yaml", name: str = "recipe.yaml") -> Path:
        raw = load_recipe(base)
        raw["output"]["dir"] = str(tmp_path / "runs" / "{name}-{backend}")
        for dotted, value in (changes or {}).items():
            node = raw
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return write_recipe(tmp_path, raw, name)

    return make


def run_folder_of(recipe: Path, backend: str) -> Path:
    raw = yaml.safe_load(recipe.read_text())
    return Path(raw["output"]["dir"].format(name=raw["name"], backend=backend))


def train(recipe: Path, backend: str, *extra: str) -> Path:
    """`unify run` for real in its own process; returns the run folder."""
    result = unify("run", str(recipe), "--backend", backend, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return run_folder_of(recipe, backend)


def assert_complete_run(folder: Path, backend: str, steps: int, artifact: str = "adapter") -> dict:
    """The run-folder contract every backend honours."""
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["backend"] == backend
    assert record["spec"]["training"]["max_steps"] == steps
    assert {"torch", "transformers", "unifier"} <= set(record["versions"])
    assert record["native_command"] and record["started"] and record["ended"]
    assert "token" not in json.dumps(record["host"]).lower()
    metrics = read_jsonl(folder / "metrics.jsonl")
    train_rows = [m for m in metrics if m.get("loss") is not None]
    assert [m["step"] for m in train_rows] == list(range(1, steps + 1))
    for row in train_rows:
        assert row["learning_rate"] is not None and row["grad_norm"] is not None and row["epoch"] > 0
        assert row["tokens_seen"] and row["step_time"] is not None
    assert train_rows[-1]["loss"] < train_rows[0]["loss"], "loss did not fall"
    assert (folder / "data" / "train.jsonl").is_file() and (folder / "loss.png").stat().st_size > 1000
    if artifact == "adapter":
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert (folder / "adapter" / "adapter_model.safetensors").is_file()
        assert (folder / "adapter" / "tokenizer.json").is_file()
    else:
        assert (folder / "model" / "model.safetensors").is_file() and (
            folder / "model" / "config.json"
        ).is_file()
    return record


def adapter_changes_output(model_dir: Path, adapter_dir: Path, quantized: bool = False) -> float:
    """Load the adapter with plain PEFT on the base model and return how much it moves the logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Peru?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter_dir).eval()
        after = tuned(ids).logits
    return float((after - before).abs().max())


def merged_matches_adapter(model_dir: Path, folder: Path) -> float:
    """merged/ must compute what base + adapter/ computes: the largest logit difference between the two."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((folder / "merged" / "config.json").read_text())
    assert "quantization_config" not in config, "merged/ must be a plain (not re-quantized) model"
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3]])
    with torch.no_grad():
        merged = (
            AutoModelForCausalLM.from_pretrained(folder / "merged", dtype=torch.float32).eval()(ids).logits
        )
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tuned = PeftModel.from_pretrained(base, folder / "adapter").eval()(ids).logits
    return float((merged - tuned).abs().max())


def preference_margin(model_dir: Path, adapter_dir: Path, folder: Path) -> float:
    """DPO's own measure over the run's preference pairs: the mean of (log p_tuned - log p_base)(chosen) minus
    the same for rejected, over the completion tokens. 0 before training; DPO makes it grow."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir
    ).eval()

    def completion_logp(model, prompt, answer):
        start = len(
            tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        ids = torch.tensor(
            [tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]]
        )
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        targets = ids[0, 1:]
        return float(logp[torch.arange(len(targets)), targets][start - 1 :].sum())

    margins = []
    rows = read_jsonl(folder / "data" / "train.jsonl")
    for row in {json.dumps(r, sort_keys=True): r for r in rows}.values():  # each pair once
        chosen = completion_logp(tuned, row["prompt"], row["chosen"]) - completion_logp(
            base, row["prompt"], row["chosen"]
        )
        rejected = completion_logp(tuned, row["prompt"], row["rejected"]) - completion_logp(
            base, row["prompt"], row["rejected"]
        )
        margins.append(chosen - rejected)
    return sum(margins) / len(margins)


def quantized_adapter_effect(model_dir: Path, adapter_dir: Path) -> float:
    """The adapter on the 4-bit (NF4) base it was trained on: the base really is 4-bit (bitsandbytes Linear4bit
    layers), and the adapter moves its logits by this much."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, quantization_config=config
    ).eval()
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in base.modules()) == 14  # 7 projections x 2 layers
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3]])
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, adapter_dir).eval()(ids).logits
    return float((after - before).abs().max())
