"""Shared fixtures: the tiny local model, recipe writing, and running the real `unify` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
# DeepSpeed compiles its CPU communication op on first use (about a minute): once per cache, not per test
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(os.environ["UNIFIER_CACHE"]) / "torch_extensions"))

from .tier_guard.plugin import (  # noqa: E402  the fast tier's guard (tests/test_tiers.py)
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_runtest_teardown,
)

__all__ = ["pytest_runtest_call", "pytest_runtest_setup", "pytest_runtest_teardown"]


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
BACKENDS = ("peft", "swift", "unsloth")
FAKE_TOKEN = "hf_FAKEfakeFAKEfakeFAKEfake0123456789"
SECRET_ENV = {"HF_TOKEN": FAKE_TOKEN, "WANDB_API_KEY": "wandb" + "0" * 36}


def shared_root(tmp_path_factory) -> Path:
    """One folder for the whole session, the same for every pytest-xdist worker (their base folders are
    siblings), so a scenario is trained once per session, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def once(tmp_path_factory, name: str, build) -> dict:
    """build(folder) -> a JSON-able result, computed by the first worker that asks; the others wait for it."""
    from filelock import FileLock

    root = shared_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if done.is_file():
            return json.loads(done.read_text())
        folder.mkdir(exist_ok=True)
        result = build(folder)
        done.write_text(json.dumps(result))
        return result


@dataclass
class Scenario:
    """One recipe trained once per session on every backend by the real `unify compare` (each backend in its
    own process, parity probe on). Tests assert on these folders; a test that writes into a run folder (eval,
    export take its lock) works on `copy_of(...)`, so tests on other workers never see its changes."""

    code: int
    report: dict
    log: str
    runs: dict[str, Path]
    terminal: dict[str, str]  # what each backend's `unify run` printed (compare keeps it as BACKEND.log)
    recipe: Path
    cwd: Path  # the folder the runs were started in (nothing may be written there)

    def run(self, backend: str) -> Path:
        assert self.code in (0, 1) and backend in self.runs, self.log[-4000:]
        return self.runs[backend]


def compare_scenario(
    tmp_path_factory, name: str, raw: dict, *, backends=BACKENDS, env: dict | None = None
) -> Scenario:
    def build(folder: Path) -> dict:
        recipe = write_recipe(folder, raw)
        output, cwd = folder / "compare", folder / "cwd"
        cwd.mkdir()
        result = unify(
            "compare", str(recipe), "--backends", ",".join(backends), "--output", str(output),
            cwd=cwd, timeout=1800, env=env,
        )  # fmt: skip
        report_file = output / "compare.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        return {
            "code": result.returncode,
            "report": report,
            "log": result.stdout + result.stderr,
            "runs": {run["backend"]: run["folder"] for run in report.get("runs", [])},
            "terminal": {
                b: (output / f"{b}.log").read_text() for b in backends if (output / f"{b}.log").is_file()
            },
            "recipe": str(recipe),
            "cwd": str(cwd),
        }

    result = once(tmp_path_factory, name, build)
    return Scenario(
        code=result["code"],
        report=result["report"],
        log=result["log"],
        runs={b: Path(f) for b, f in result["runs"].items()},
        terminal=result["terminal"],
        recipe=Path(result["recipe"]),
        cwd=Path(result["cwd"]),
    )


def copy_of(folder: Path, into: Path) -> Path:
    """A private copy of a shared run folder, for a test that writes into it."""
    target = into / folder.name
    shutil.copytree(folder, target)
    return target


def recipe_with(base: str = "tiny-cpu-sft.yaml", **changes) -> dict:
    """A shipped recipe with dotted changes (`training__max_steps=20`)."""
    raw = load_recipe(base)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


TEXT_CORPUS = [{"text": f"The capital of country {i} is city {i}. It has {3 * i} rivers."} for i in range(40)]


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory) -> Scenario:
    """LoRA on the bundled chat data (single- and multi-turn, system prompts), REFERENCE_STEPS steps, with
    tensorboard logging and a secret passed by reference (`${HF_TOKEN}`, set in the environment). The parity,
    backend, logging, secrets, resume and after-training tests all assert on these runs."""
    raw = recipe_with(
        training__max_steps=REFERENCE_STEPS,
        output__report_to=["tensorboard"],
        backend_options={
            "peft": {"trainer_args": {"hub_token": "${HF_TOKEN}"}},
            "swift": {"hub_token": "${HF_TOKEN}"},
        },
    )
    return compare_scenario(tmp_path_factory, "lora", raw, env=SECRET_ENV)


QLORA_STEPS = 20


@pytest.fixture(scope="session")
def qlora_runs(tmp_path_factory) -> Scenario:
    """QLoRA (NF4) with gradient checkpointing, evaluation every 2 steps on a held-out tenth (bitsandbytes'
    CPU repacking after an evaluation must not break training) and a merged save."""
    raw = recipe_with(
        "tiny-cpu-qlora.yaml",
        training__max_steps=QLORA_STEPS,
        training__gradient_checkpointing=True,
        training__eval_steps=2,
        data__eval_split=0.1,
        output__save="both",
    )
    return compare_scenario(tmp_path_factory, "qlora", raw)


FULL_STEPS = 12  # training.epochs 2 over 24 rows at batch 4


def two_format_sources(folder: Path) -> dict:
    """12 two-turn sharegpt chats (a JSON array) and 12 alpaca instructions (JSONL)."""
    sharegpt = folder / "chats.json"
    chats = [
        {
            "conversations": [
                {"from": "system", "value": "You answer briefly."},
                {"from": "human", "value": f"How many legs does animal {i} have?"},
                {"from": "gpt", "value": f"Animal {i} has {i % 5 + 2} legs."},
                {"from": "human", "value": "And wings?"},
                {"from": "gpt", "value": "No wings." if i % 2 else "Two wings."},
            ]
        }
        for i in range(12)
    ]
    sharegpt.write_text(json.dumps(chats))
    alpaca = folder / "instructions.jsonl"
    sums = [
        {"instruction": "Add the numbers.", "input": f"{i} and {i + 3}", "output": f"The sum is {2 * i + 3}."}
        for i in range(12)
    ]
    alpaca.write_text("".join(json.dumps(row) + "\n" for row in sums))
    return {
        "train": [{"path": str(sharegpt), "format": "sharegpt"}, {"path": str(alpaca), "format": "alpaca"}]
    }


@pytest.fixture(scope="session")
def full_runs(tmp_path_factory) -> Scenario:
    """Full fine-tuning on two sources of two formats (sharegpt, alpaca) for training.epochs 2 (no max_steps):
    unifier writes both passes, each shuffled with data.seed and the pass, and every backend reads them in file
    order."""
    sources = once(tmp_path_factory, "two-format-sources", two_format_sources)["train"]
    raw = recipe_with(adapter__type="full", training__learning_rate=1e-3, data__train=sources)
    raw["training"].pop("max_steps")
    raw["training"]["epochs"] = 2
    return compare_scenario(tmp_path_factory, "full", raw)


DPO_STEPS = 30


@pytest.fixture(scope="session")
def dpo_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-dpo.yaml as shipped (a quarter of the pairs held out), with a merged save."""
    raw = recipe_with("tiny-cpu-dpo.yaml", output__save="both")
    assert raw["training"]["max_steps"] == DPO_STEPS
    return compare_scenario(tmp_path_factory, "dpo", raw)


PAIR_METHOD_STEPS = 12


@pytest.fixture(scope="session")
def orpo_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-orpo.yaml (no reference model), PAIR_METHOD_STEPS steps, on every backend."""
    raw = recipe_with("tiny-cpu-orpo.yaml", training__max_steps=PAIR_METHOD_STEPS)
    return compare_scenario(tmp_path_factory, "orpo", raw)


@pytest.fixture(scope="session")
def kto_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-kto.yaml (unpaired answers, unifier's KL pairs) on every backend."""
    raw = recipe_with("tiny-cpu-kto.yaml", training__max_steps=PAIR_METHOD_STEPS)
    return compare_scenario(tmp_path_factory, "kto", raw)


@pytest.fixture(scope="session")
def simpo_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-simpo.yaml with an NLL term (CPO-SimPO, so every option reaches the loss)."""
    raw = recipe_with("tiny-cpu-simpo.yaml", training__max_steps=PAIR_METHOD_STEPS)
    raw["training"]["simpo"]["nll_weight"] = 0.5
    return compare_scenario(tmp_path_factory, "simpo", raw)


@pytest.fixture(scope="session")
def reward_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-reward.yaml (a score head on the tiny model) on peft and swift (unsloth trains causal LMs
    only), with periodic evaluation on the held-out pairs."""
    raw = recipe_with("tiny-cpu-reward.yaml", training__max_steps=PAIR_METHOD_STEPS, training__eval_steps=6)
    return compare_scenario(tmp_path_factory, "reward", raw, backends=("peft", "swift"))


@pytest.fixture(scope="session")
def grpo_runs(tmp_path_factory) -> Scenario:
    """recipes/tiny-cpu-grpo.yaml on every backend, its own reward swapped for a recorder of what the rewards
    are given (tests/data/grpo_recorder.py, logging under the scenario's folder)."""
    raw = recipe_with("tiny-cpu-grpo.yaml")
    raw["training"]["grpo"]["rewards"] = [
        "exact_answer",
        str(ROOT / "tests" / "data" / "grpo_recorder.py") + ":recorded",
    ]
    log = shared_root(tmp_path_factory) / "grpo-rewards"
    return compare_scenario(tmp_path_factory, "grpo", raw, env={"UNIFIER_TEST_REWARD_LOG": str(log)})


# two processes of two rows each (global batch 4, as the reference run's one process with four), gloo DDP
TWO_PROCESSES = {
    "training.max_steps": REFERENCE_STEPS,
    "training.per_device_batch_size": 2,
    "compute.nproc_per_node": 2,
    "training.save_steps": 4,
}


@pytest.fixture(scope="session")
def two_process_runs(tmp_path_factory) -> Scenario:
    """The tiny recipe on two processes (torchrun, gloo DDP on CPU) with peft and swift: the multi-process
    parity, rank-check, FSDP2 and kill/resume tests assert on these runs."""
    raw = recipe_with(**{key.replace(".", "__"): value for key, value in TWO_PROCESSES.items()})
    raw["compute"]["master_port"] = 29731
    return compare_scenario(tmp_path_factory, "two-processes", raw, backends=("peft", "swift"))


TEXT_STEPS = 20


@pytest.fixture(scope="session")
def text_runs(tmp_path_factory) -> Scenario:
    """Raw text (continued pre-training): no chat markup, loss on every token."""

    def corpus(folder: Path) -> dict:
        path = folder / "corpus.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in TEXT_CORPUS))
        return {"path": str(path)}

    path = once(tmp_path_factory, "text-corpus", corpus)["path"]
    raw = recipe_with(training__max_steps=TEXT_STEPS, data__train=[{"path": path, "format": "text"}])
    return compare_scenario(tmp_path_factory, "text", raw)


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
    assert record["spec"]["training"]["max_steps"] in (steps, None)  # None: a run of training.epochs
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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """`unify demo` (recipes/tiny-cpu-sft.yaml, 300 steps on the default backend, then eval), once per session:
    its terminal output is in demo.json next to the folder."""

    def build(folder: Path) -> dict:
        result = unify("demo", "--output", str(folder / "demo"))
        return {"code": result.returncode, "stdout": result.stdout, "stderr": result.stderr}

    result = once(tmp_path_factory, "demo", build)
    assert result["code"] == 0, result["stderr"][-3000:]
    return shared_root(tmp_path_factory) / "demo" / "demo"


def demo_output(tmp_path_factory) -> dict:
    return json.loads((shared_root(tmp_path_factory) / "demo.json").read_text())
