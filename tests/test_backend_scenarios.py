"""Every backend trains the tiny model for real: LoRA, QLoRA, full fine-tuning, DPO and raw text, each run once
per session (tests/conftest.py's scenarios, which the parity suite compares) and checked here per backend: the
run-folder contract, what the plan passed, and that the saved weights do what training should."""

from __future__ import annotations

import json
import math

import pytest

from .conftest import (
    BACKENDS,
    DPO_STEPS,
    FULL_STEPS,
    QLORA_STEPS,
    REFERENCE_STEPS,
    TEXT_STEPS,
    adapter_changes_output,
    assert_complete_run,
    merged_matches_adapter,
    payload_of,
    preference_margin,
    quantized_adapter_effect,
    read_jsonl,
)

pytestmark = pytest.mark.slow


def argv_value(record: dict, flag: str) -> str:
    argv = payload_of(record["plan"])["argv"]
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lora_run_folder_and_adapter(reference_runs, tiny_model_dir, backend):
    folder = reference_runs.run(backend)
    record = assert_complete_run(folder, backend, REFERENCE_STEPS)
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-3
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0.0
    if backend == "peft":
        assert payload_of(record["plan"])["trainer_args"]["weight_decay"] == 0.0
    if backend == "swift":
        assert record["versions"]["ms-swift"].startswith("4.")
        assert record["backend_details"]["process_mode"] == "in-process"
        command = next(line for line in record["native_command"].splitlines() if not line.startswith("#"))
        assert "HF_HUB_OFFLINE=1" in command and command.endswith("swift sft \\")
    if backend == "unsloth":
        details = record["backend_details"]
        assert (
            details["unsloth_path"] == "cpu" and details["unsloth_version"] == record["versions"]["unsloth"]
        )
        assert (folder / "native" / "train_unsloth.py").is_file()
    # the runs started in an empty folder: nothing (unsloth's compiled cache included) was written there
    assert list(reference_runs.cwd.iterdir()) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_qlora_with_gradient_checkpointing_evaluation_and_merged_save(qlora_runs, tiny_model_dir, backend):
    """bitsandbytes' CPU 4-bit layers repack on the first evaluation and then break training; unifier keeps
    them trainable on every backend. The merged save is the 16-bit base plus the adapter (not re-quantized)."""
    folder = qlora_runs.run(backend)
    record = assert_complete_run(folder, backend, QLORA_STEPS)
    payload = payload_of(record["plan"])
    if backend == "peft":
        assert payload["trainer_args"]["gradient_checkpointing"] is True
    elif backend == "swift":
        assert argv_value(record, "--gradient_checkpointing") == "true"
        assert (
            argv_value(record, "--quant_bits") == "4" and argv_value(record, "--bnb_4bit_quant_type") == "nf4"
        )
        assert record["backend_details"]["merged"] == str(folder / "merged")
        assert "unifier merges adapter/" in record["native_command"]
    else:
        assert payload["lora"]["use_gradient_checkpointing"] is True
        assert payload["from_pretrained"]["load_in_4bit"] is True
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert quantized_adapter_effect(tiny_model_dir, folder / "adapter") > 1e-4
    evals = [m["eval_loss"] for m in read_jsonl(folder / "metrics.jsonl") if m.get("eval_loss") is not None]
    assert len(evals) == QLORA_STEPS // 2 and all(math.isfinite(e) for e in evals) and evals[-1] < evals[0]
    assert (folder / "merged" / "tokenizer.json").is_file()
    assert merged_matches_adapter(tiny_model_dir, folder) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_fine_tuning_saves_a_changed_model(full_runs, tiny_model_dir, backend):
    from safetensors.torch import load_file

    folder = full_runs.run(backend)
    assert_complete_run(folder, backend, FULL_STEPS, artifact="model")
    tuned = load_file(folder / "model" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any((tuned[k] - base[k]).abs().max() > 0 for k in base)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpo_on_preference_pairs_and_merged_save(dpo_runs, tiny_model_dir, backend):
    folder = dpo_runs.run(backend)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["data"]["kind"] == "preference"
    if backend == "swift":
        assert "swift rlhf" in record["native_command"]
    if backend == "unsloth":
        assert record["backend_details"]["unsloth_path"] == "cpu"
    rows = [r for r in read_jsonl(folder / "metrics.jsonl") if r.get("loss") is not None]
    assert len(rows) == DPO_STEPS and abs(rows[0]["loss"] - 0.6931) < 1e-3  # log(2): policy == reference
    assert (
        preference_margin(tiny_model_dir, folder / "adapter", folder) > 0.05
    )  # it prefers what it was shown
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert merged_matches_adapter(tiny_model_dir, folder) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_text_continued_pretraining(text_runs, backend):
    folder = text_runs.run(backend)
    record = assert_complete_run(folder, backend, TEXT_STEPS)
    tokens = read_jsonl(folder / "data" / "train.tokens.jsonl")[0]
    assert set(tokens["assistant_masks"]) == {1}  # loss on every token, the EOS trl appends included
    if backend == "swift":
        assert argv_value(record, "--template") == "unifier_tokens"
        view = read_jsonl(folder / "data" / "train.swift.jsonl")[0]
        assert view["messages"][0]["content"].startswith("The capital")
        assert view["unifier_input_ids"] == tokens["input_ids"] == view["unifier_labels"]
