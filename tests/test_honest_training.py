"""Every recipe that validates trains correctly on the backend that accepts it, or is refused first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import RECIPES, once, read_jsonl, run_folder_of, unify


def sets(*overrides: str) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


TINY_ON_CPU = sets(
    "model.name_or_path=builtin:tiny-qwen2",
    "compute.device=cpu",
    "model.dtype=float32",
    "training.gradient_checkpointing=false",
)


BACKENDS = ("peft", "swift", "unsloth")


@pytest.fixture(scope="session")
def function_calling_runs(tmp_path_factory):
    """The seed's agent scenario: the shipped OpenAI tools data, through the real recipe, on the tiny model,
    once per backend and session (parity probe on): {backend: ((exit code, stderr), folder)}."""
    recipe = RECIPES / "qwen3-8b-lora-function-calling-1gpu.yaml"

    def build(root: Path) -> dict:
        runs = {}
        for backend in BACKENDS:
            overrides = sets(
                "training.max_steps=4",
                "training.per_device_batch_size=1",
                "training.logging_steps=1",
                "training.gradient_accumulation_steps=1",
                "output.probe=true",
                f"output.dir={root / backend}",
            )
            result = unify("run", str(recipe), "--backend", backend, *TINY_ON_CPU, *overrides)
            runs[backend] = [[result.returncode, result.stderr[-3000:]], str(root / backend)]
        return runs

    return {b: (tuple(r), Path(f)) for b, (r, f) in once(tmp_path_factory, "function-calling", build).items()}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_function_calling_recipe_trains_on_every_backend(backend, function_calling_runs):
    (code, stderr), folder = function_calling_runs[backend]
    assert code == 0, stderr
    rows = [m for m in read_jsonl(folder / "metrics.jsonl") if m.get("loss") is not None]
    assert len(rows) == 4
    assert all(row["loss"] > 0.1 and row["grad_norm"] > 0 for row in rows), rows  # it learns the calls
    trained = json.loads((folder / "run.json").read_text())["data"]["tokens"]
    assert trained["rows_with_nothing_to_learn"] == 0 and trained["trained_tokens"] > 0


@pytest.mark.slow
def test_tool_conversations_train_the_same_on_every_backend(function_calling_runs, tmp_path):
    """Parity on tools data: the same tokens and loss masks (system + tools header, <tool_call> blocks, tool
    results as user turns), the same losses and adapters."""
    folders = [function_calling_runs[backend][1] for backend in BACKENDS]
    result = unify("compare", "--runs", *map(str, folders), "--output", str(tmp_path / "compare"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads((tmp_path / "compare" / "compare.json").read_text())
    for pair in report["pairs"]:
        assert pair["samples"]["identical"] is True and pair["samples"]["compared"] >= 4, pair
        assert pair["losses"]["steps_compared"] == 4 and pair["losses"]["max_relative_difference"] <= 1e-5


def test_prompts_longer_than_max_seq_length_are_refused_before_anything_is_written(tmp_path):
    recipe = RECIPES / "qwen3-8b-lora-function-calling-1gpu.yaml"
    args = [*TINY_ON_CPU, "--set", "model.max_seq_length=64", "--set", f"output.dir={tmp_path / 'run'}"]
    for command in ("validate", "run"):
        result = unify(command, str(recipe), "--backend", "peft", *args)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "no training row keeps a trained token within model.max_seq_length 64" in result.stderr
        assert "tool_calls.jsonl:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_rows_cut_before_their_answer_are_reported_with_file_and_row(tiny_recipe, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}] * 3
    rows.append(
        {
            "messages": [
                {"role": "system", "content": "word " * 400},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
    )
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = unify("validate", str(tiny_recipe({"data.train": [{"path": str(data)}], "data.shuffle": False})))
    assert result.returncode == 0, result.stderr
    assert (
        "1 of 4 training rows (25%) keep no trained token" in result.stdout and f"{data}:4" in result.stdout
    )


def assert_stopped_at_a_nonfinite_step(folder: Path, terminal: str, max_steps: int) -> None:
    assert "training failed" in terminal and "lower training.learning_rate" in terminal.lower()
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and "step" in record["error"]
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]  # valid JSON
    bad = [m for m in metrics if m.get("nonfinite")]
    assert bad and bad[0]["step"] < max_steps and all(m["step"] <= bad[0]["step"] for m in metrics)
    assert not (folder / "adapter").exists()  # no garbage adapter


@pytest.mark.slow
def test_a_diverging_run_stops_with_the_step_and_a_hint(tiny_recipe):
    """On peft here; on swift in test_everyday's compare, whose swift run diverges the same way."""
    recipe = tiny_recipe(
        {"training.learning_rate": 1e30, "training.max_grad_norm": 0, "training.max_steps": 20}
    )
    result = unify("run", str(recipe), "--backend", "peft")
    assert result.returncode == 1, result.stderr[-3000:]
    assert_stopped_at_a_nonfinite_step(run_folder_of(recipe, "peft"), result.stderr, 20)


def test_every_pass_over_the_data_has_its_own_order(tmp_path):
    from unifier.data import prepare_data
    from unifier.runfolder import RunFolder
    from unifier.spec import spec_from_dict

    spec = spec_from_dict(
        {
            "model": {"name_or_path": "builtin:tiny-qwen2"},
            "training": {"epochs": 3},
            "data": {"train": [{"path": "builtin:tiny-chat"}], "seed": 5},
        }
    )
    data = prepare_data(spec)
    folder = RunFolder(tmp_path / "run")
    data.write(folder)
    rows = read_jsonl(folder.data_file("train"))
    n = len(data.train)
    passes = [rows[i * n : (i + 1) * n] for i in range(3)]
    assert len(rows) == 3 * n and data.epochs_in_file == 3
    assert passes[0] != passes[1] != passes[2] != passes[0]
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, passes[0])) == sorted(map(key, passes[1])) == sorted(map(key, passes[2]))
    again = prepare_data(spec)
    again.write(RunFolder(tmp_path / "again"))
    assert read_jsonl(tmp_path / "again" / "data" / "train.jsonl") == rows  # seeded: the same every time
    from unifier.core import plan

    assert (
        plan(spec, "peft").program.config["trainer_args"]["num_train_epochs"] == 1.0
    )  # three passes, one file


@pytest.mark.slow
def test_validates_token_counts_are_what_the_trainer_trains_on(function_calling_runs, tiny_model_dir):
    """unify validate's encoder (tokenizers + the template renderer, no torch) gives the trainer's own input_ids
    and loss mask (the parity probe records what the data collator returned), tools included."""
    from unifier.data.encode import Encoder, Vocabulary
    from unifier.data.tokens import resolve_template

    (code, stderr), folder = function_calling_runs["peft"]
    assert code == 0, stderr
    record = json.loads((folder / "run.json").read_text())
    vocabulary = Vocabulary.from_folder(Path(tiny_model_dir))
    template = resolve_template(record["spec"]["model"]["chat_template"], vocabulary, "tiny")
    max_len = record["spec"]["model"]["max_seq_length"]
    encoder = Encoder(vocabulary, template, max_len=max_len)
    samples = read_jsonl(folder / "probe" / "samples.jsonl")
    rows = read_jsonl(folder / "data" / "train.jsonl")
    assert len(samples) >= 4 and any(row.get("tools") for row in rows)
    for row, sample in zip(rows, samples):
        ids, mask, _ = encoder.chat(row["messages"], row.get("tools"))
        assert ids[:max_len] == sample["input_ids"]
        assert [int(label != -100) for label in sample["labels"]][1:] == mask[1:max_len]
    trained = sum(sum(encoder.chat(r["messages"], r.get("tools"))[1][:max_len]) for r in rows[: len(rows)])
    assert record["data"]["tokens"]["trained_tokens"] * (len(rows) // record["data"]["train_rows"]) == trained
