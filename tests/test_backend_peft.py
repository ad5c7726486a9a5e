"""The peft backend (transformers + peft + trl) trains the tiny model for real."""

import itertools
import json
import subprocess
import sys

import pytest

from .conftest import (
    adapter_changes_output,
    assert_complete_run,
    merged_matches_adapter,
    payload_of,
    preference_margin,
    quantized_adapter_effect,
    read_jsonl,
    train,
    unify,
)

pytestmark = pytest.mark.slow


def test_lora_run_folder_adapter_and_standalone_script(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe({"training.max_steps": 12})
    folder = train(recipe, "peft")
    record = assert_complete_run(folder, "peft", 12)
    assert payload_of(record["plan"])["trainer_args"]["weight_decay"] == 0.0
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-3
    # the printed script reproduces the run without unifier: same per-step losses, same adapter
    again = tmp_path / "again"
    plan = unify("plan", str(recipe), "--backend", "peft", "--set", f"output.dir={again}")
    assert plan.returncode == 0, plan.stderr
    assert "unifier" not in "\n".join(
        line for line in plan.stdout.splitlines() if line.startswith(("import", "from"))
    )
    (again / "data").mkdir(parents=True)
    (again / "data" / "train.jsonl").write_text((folder / "data" / "train.jsonl").read_text())
    script = tmp_path / "train.py"
    script.write_text(plan.stdout)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((again / "checkpoints" / "log_history.json").read_text())
    by_hand = [row["loss"] for row in history if "loss" in row]
    by_unify = [row["loss"] for row in read_jsonl(folder / "metrics.jsonl") if row.get("loss") is not None]
    assert by_hand == pytest.approx(by_unify, rel=1e-6)


def test_qlora_on_cpu(tiny_recipe, tiny_model_dir):
    folder = train(
        tiny_recipe(
            {"training.max_steps": 8, "training.gradient_checkpointing": True}, base="tiny-cpu-qlora.yaml"
        ),
        "peft",
    )
    record = assert_complete_run(folder, "peft", 8)
    assert payload_of(record["plan"])["trainer_args"]["gradient_checkpointing"] is True
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert quantized_adapter_effect(tiny_model_dir, folder / "adapter") > 1e-4


def test_full_fine_tuning_saves_a_model(tiny_recipe, tiny_model_dir):
    folder = train(
        tiny_recipe({"adapter.type": "full", "training.max_steps": 6, "training.learning_rate": 1e-3}), "peft"
    )
    assert_complete_run(folder, "peft", 6, artifact="model")
    from safetensors.torch import load_file

    tuned, base = (
        load_file(folder / "model" / "model.safetensors"),
        load_file(tiny_model_dir / "model.safetensors"),
    )
    assert any((tuned[k] - base[k]).abs().max() > 0 for k in base)


def test_dora_rslora_eval_split_and_merged_save(tiny_recipe, tiny_model_dir):
    recipe = tiny_recipe(
        {
            "training.max_steps": 6,
            "adapter.use_dora": True,
            "adapter.use_rslora": True,
            "data.eval_split": 0.1,
            "training.eval_steps": 3,
            "output.save": "both",
        }
    )
    folder = train(recipe, "peft")
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True
    assert any(row.get("eval_loss") for row in read_jsonl(folder / "metrics.jsonl"))
    assert (folder / "merged" / "model.safetensors").is_file()
    assert merged_matches_adapter(tiny_model_dir, folder) < 1e-4
    assert len(read_jsonl(folder / "data" / "eval.jsonl")) == 7


def test_raw_text_continued_pretraining(tiny_recipe, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"The capital of country {i} is city {i}."}) + "\n" for i in range(40))
    )
    folder = train(tiny_recipe({"data.train": [{"path": str(corpus)}], "training.max_steps": 6}), "peft")
    assert_complete_run(folder, "peft", 6)


def test_dpo_on_preference_pairs(tiny_recipe, tiny_model_dir):
    recipe = tiny_recipe(
        {
            "training.method": "dpo",
            "data.train": [{"path": "builtin:tiny-preference"}],
            "training.max_steps": 30,
            "training.per_device_batch_size": 2,
            "training.learning_rate": 5e-3,
        }
    )
    folder = train(recipe, "peft")
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["data"]["kind"] == "preference"
    rows = [r for r in read_jsonl(folder / "metrics.jsonl") if r.get("loss") is not None]
    assert (
        len(rows) == 30 and abs(rows[0]["loss"] - 0.6931) < 1e-3
    )  # DPO starts at log(2): policy == reference
    assert (
        preference_margin(tiny_model_dir, folder / "adapter", folder) > 0.05
    )  # it prefers what it was shown


def test_packing_packs_samples_without_cross_contamination(tiny_recipe, tiny_model_dir):
    """trl warns that packing without flash-attention may let samples attend to each other. With trl's
    use_cache=False in training, transformers masks packed rows by their position_ids under sdpa too: each
    packed row must give exactly the logits its samples give one by one."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = train(tiny_recipe({"training.max_steps": 4, "data.packing": True, "output.probe": True}), "peft")
    assert_complete_run(folder, "peft", 4)
    assert (
        payload_of(json.loads((folder / "run.json").read_text())["plan"])["trainer_args"]["packing"] is True
    )
    rows = read_jsonl(folder / "probe" / "samples.jsonl")
    assert len(rows) < 68 / 3, "68 short chats should pack into far fewer 256-token rows"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for row in rows[:3]:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
        assert len(starts) > 3 and len(row["input_ids"]) <= 256
        with torch.no_grad():
            packed = model(
                torch.tensor([row["input_ids"]]),
                position_ids=torch.tensor([row["position_ids"]]),
                use_cache=False,
            ).logits[0]
            for begin, end in itertools.pairwise(starts):
                alone = model(torch.tensor([row["input_ids"][begin:end]]), use_cache=False).logits[0]
                assert (packed[begin:end] - alone).abs().max() < 1e-4
