"""The unsloth backend trains for real through unsloth's CPU path, and plans its GPU path honestly."""

import json
import subprocess
import sys

import pytest
from unifier.backends.unsloth import resolve_model_name

from unifier.core import get_backend, plan_context, run_folder
from unifier.spec.loading import load_spec

from .conftest import (
    adapter_changes_output,
    assert_complete_run,
    merged_matches_adapter,
    payload_of,
    preference_margin,
    quantized_adapter_effect,
    read_jsonl,
    run_folder_of,
    train,
    unify,
)


@pytest.mark.slow
def test_lora_on_cpu_writes_the_common_run_folder(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe({"training.max_steps": 10})
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = unify("run", str(recipe), "--backend", "unsloth", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_folder_of(recipe, "unsloth")
    record = assert_complete_run(folder, "unsloth", 10)
    details = record["backend_details"]
    assert details["unsloth_path"] == "cpu" and details["unsloth_version"] == record["versions"]["unsloth"]
    assert (folder / "native" / "train_unsloth.py").is_file()
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-3
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0.0
    # unsloth's side effects (its compiled cache) stay out of the working directory
    assert list(workdir.iterdir()) == []
    # the printed script reproduces the run without unifier: the same per-step losses
    again = tmp_path / "again"
    plan = unify("plan", str(recipe), "--backend", "unsloth", "--set", f"output.dir={again}")
    assert plan.returncode == 0, plan.stderr
    (again / "data").mkdir(parents=True)
    (again / "data" / "train.jsonl").write_text((folder / "data" / "train.jsonl").read_text())
    script = tmp_path / "train_unsloth.py"
    script.write_text(plan.stdout)
    by_hand = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=workdir)
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    history = json.loads((again / "checkpoints" / "log_history.json").read_text())
    expected = [row["loss"] for row in read_jsonl(folder / "metrics.jsonl") if row.get("loss") is not None]
    assert [row["loss"] for row in history if "loss" in row] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_qlora_nf4_on_cpu(tiny_recipe, tiny_model_dir):
    folder = train(
        tiny_recipe(
            {"training.max_steps": 6, "training.gradient_checkpointing": True}, base="tiny-cpu-qlora.yaml"
        ),
        "unsloth",
    )
    record = assert_complete_run(folder, "unsloth", 6)
    assert payload_of(record["plan"])["lora"]["use_gradient_checkpointing"] is True
    assert payload_of(record["plan"])["from_pretrained"]["load_in_4bit"] is True
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert quantized_adapter_effect(tiny_model_dir, folder / "adapter") > 1e-4


@pytest.mark.slow
def test_dpo_on_preference_pairs_and_merged_save(tiny_recipe, tiny_model_dir):
    recipe = tiny_recipe(
        {
            "training.method": "dpo",
            "data.train": [{"path": "builtin:tiny-preference"}],
            "training.max_steps": 30,
            "training.per_device_batch_size": 2,
            "training.learning_rate": 5e-3,
            "output.save": "both",
        }
    )
    folder = train(recipe, "unsloth")
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["data"]["kind"] == "preference"
    assert record["backend_details"]["unsloth_path"] == "cpu"
    rows = [r for r in read_jsonl(folder / "metrics.jsonl") if r.get("loss") is not None]
    assert (
        len(rows) == 30 and abs(rows[0]["loss"] - 0.6931) < 1e-3
    )  # DPO starts at log(2): policy == reference
    assert preference_margin(tiny_model_dir, folder / "adapter", folder) > 0.05
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert merged_matches_adapter(tiny_model_dir, folder) < 1e-4


def test_hub_name_maps_to_the_dynamic_4bit_twin_in_plan(tiny_recipe):
    recipe = tiny_recipe(
        {
            "model.name_or_path": "Qwen/Qwen3-8B",
            "adapter.type": "qlora",
            "quantization.bits": 4,
            "quantization.double_quant": True,
            "compute.device": "cuda",
        }
    )
    result = unify("plan", str(recipe), "--backend", "unsloth")
    assert result.returncode == 0, result.stderr
    assert "# dynamic 4-bit: Qwen/Qwen3-8B -> unsloth/Qwen3-8B-unsloth-bnb-4bit" in result.stdout
    assert (
        "'model': 'unsloth/Qwen3-8B-unsloth-bnb-4bit'" in result.stdout
        or '"model": "unsloth/Qwen3-8B-unsloth-bnb-4bit"' in result.stdout
    )
    # the spec opts out: the name is loaded as written and quantized on the fly
    spec = load_spec(recipe, ["quantization.prequantized=false"])
    assert resolve_model_name(context(spec)) == ("Qwen/Qwen3-8B", None)
    # a 16-bit LoRA run never swaps the model
    spec = load_spec(tiny_recipe({"model.name_or_path": "Qwen/Qwen3-8B"}, name="lora.yaml"))
    assert resolve_model_name(context(spec)) == ("Qwen/Qwen3-8B", None)


def context(spec):
    backend = get_backend("unsloth")
    return plan_context(spec, backend, run_folder(spec, "unsloth"), "chat")


def test_refusals_point_somewhere(tiny_recipe):
    multi = unify("validate", str(tiny_recipe({"compute.nproc_per_node": 2})), "--backend", "unsloth")
    assert multi.returncode == 2 and "swift" in multi.stderr + multi.stdout
    fp4 = unify(
        "validate",
        str(
            tiny_recipe(
                {"adapter.type": "qlora", "quantization.bits": 4, "quantization.quant_type": "fp4"},
                name="fp4.yaml",
            )
        ),
        "--backend",
        "unsloth",
    )
    assert fp4.returncode == 2 and "nf4" in fp4.stderr + fp4.stdout
    packing = unify(
        "validate", str(tiny_recipe({"data.packing": True}, name="packing.yaml")), "--backend", "unsloth"
    )
    assert packing.returncode == 2 and "data.packing" in packing.stderr + packing.stdout
