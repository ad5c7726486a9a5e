"""Every shipped recipe validates and plans here, including the ones meant for GPUs and several nodes.

Planning is a pure function of the recipe: it needs neither a GPU nor deepspeed nor network access, so
these tests read the exact native commands and scripts a bigger machine would run.
"""

import json

import pytest

from unifier.core import plan
from unifier.spec import load_spec

from .conftest import RECIPES, payload_of, unify

ALL_RECIPES = sorted(p.name for p in RECIPES.glob("*.yaml"))


def plan_json(recipe: str, backend: str, *extra: str) -> dict:
    result = unify("plan", str(RECIPES / recipe), "--backend", backend, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return payload_of(json.loads(result.stdout))


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_recipe_validates_with_its_data(recipe):
    result = unify("validate", str(RECIPES / recipe))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "train rows" in result.stdout and "backend:" in result.stdout


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_recipe_plans_on_every_backend_that_supports_it(recipe):
    from unifier.backends import all_backends

    spec = load_spec(RECIPES / recipe)
    supported = [b.name for b in all_backends() if not b.check(spec, here=False)]
    assert supported, f"{recipe}: no backend can ever run it"
    for backend in supported:
        the_plan = plan(spec, backend)
        assert the_plan.render().strip(), (recipe, backend)
        assert_carries_the_recipe(spec, the_plan)
    for backend in {"peft", "swift", "unsloth"} - set(supported):
        refused = unify("plan", str(RECIPES / recipe), "--backend", backend)
        assert refused.returncode == 2 and f"backend '{backend}' cannot run this spec" in refused.stderr


def assert_carries_the_recipe(spec, the_plan) -> None:
    """The values that make each recipe what it is reach the native program (not just "a plan exists")."""
    from .test_translation import config_value, flag_values

    t, a, m = spec.training, spec.adapter, spec.model
    if the_plan.backend == "swift":
        argv = the_plan.program.argv
        assert flag_values(argv, "--learning_rate") == [str(t.learning_rate)]
        assert flag_values(argv, "--max_length") == [str(m.max_seq_length)]
        assert flag_values(argv, "--gradient_accumulation_steps") == [str(t.gradient_accumulation_steps)]
        assert flag_values(argv, "--torch_dtype") == [m.dtype]
        if a.type != "full":
            assert flag_values(argv, "--lora_rank") == [str(a.r)] and flag_values(argv, "--lora_alpha") == [
                str(a.alpha)
            ]
        return
    config = the_plan.program.config
    assert config_value(config, "trainer_args.learning_rate") == t.learning_rate
    assert config_value(config, "trainer_args.gradient_accumulation_steps") == t.gradient_accumulation_steps
    if t.method == "grpo":  # GRPO's trl config bounds completions itself
        assert config_value(config, "trainer_args.max_completion_length") == t.grpo.max_completion_length
    else:
        assert config_value(config, "trainer_args.max_length") == m.max_seq_length
    assert config["dtype"] == m.dtype
    if a.type != "full":
        assert config["lora"]["r"] == a.r and config["lora"]["lora_alpha"] == a.alpha


def test_eight_gpu_zero2_recipe_is_a_torchrun_swift_command():
    payload = plan_json("qwen3-8b-lora-zero2-8gpu.yaml", "swift")
    assert payload["env"]["NPROC_PER_NODE"] == "8" and payload["env"]["NNODES"] == "1"
    argv = payload["argv"]
    assert argv[argv.index("--deepspeed") + 1] == "zero2"
    assert "--use_cpu" not in argv and argv[argv.index("--bf16") + 1] == "true"
    assert (
        argv[argv.index("--use_hf") + 1] == "true"
    )  # the same weights as peft/unsloth (HF Hub, not ModelScope)
    assert "HF_HUB_OFFLINE" not in payload["env"]  # a hub model: ms-swift may download it


def test_two_node_recipe_sets_the_rendezvous_and_the_second_node_overrides_its_rank():
    node0 = plan_json("qwen3-8b-lora-zero2-2node.yaml", "swift")["env"]
    rendezvous = {
        key: node0[key] for key in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    assert rendezvous == {
        "NPROC_PER_NODE": "8",
        "NNODES": "2",
        "NODE_RANK": "0",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    node1 = plan_json("qwen3-8b-lora-zero2-2node.yaml", "swift", "--set", "compute.node_rank=1")["env"]
    assert node1["NODE_RANK"] == "1"


def test_knowledge_recipe_trains_raw_text_with_loss_on_every_token():
    """Text rows become tokens + EOS with loss on every token in unifier's encoder (tests/test_encode.py); every
    backend trains those tokens as they are (ms-swift through unifier's template, packed with flash-attention)."""
    swift = plan_json("qwen3-8b-lora-knowledge-text-1gpu.yaml", "swift")
    argv = swift["argv"]
    assert swift["data_kind"] == "text" and argv[argv.index("--template") + 1] == "unifier_tokens"
    assert argv[argv.index("--attn_impl") + 1] == "flash_attn"
    assert argv[argv.index("--dataset") + 1].endswith("train.swift.jsonl")
    peft = plan_json("qwen3-8b-lora-knowledge-text-1gpu.yaml", "peft")
    assert peft["trainer_args"]["packing"] is True and peft["trainer_args"]["assistant_only_loss"] is False
    assert peft["chat_template_file"] is None  # raw text trains no chat format
    assert peft["lora"]["use_rslora"] is True


def test_function_calling_recipe_renders_tools_the_same_way_everywhere():
    """Tools render once, in unifier's encoder with the run's template; every backend trains those tokens and
    saves that template with the adapter."""
    argv = plan_json("qwen3-8b-lora-function-calling-1gpu.yaml", "swift")["argv"]
    assert argv[argv.index("--template") + 1] == "unifier_tokens"
    assert argv[argv.index("--dataset") + 1].endswith("train.swift.jsonl")
    peft = plan_json("qwen3-8b-lora-function-calling-1gpu.yaml", "peft")
    assert peft["chat_template_file"].endswith("data/chat_template.jinja")
    assert peft["trainer_args"]["assistant_only_loss"] is False  # the encoder's assistant_masks decide


def test_single_gpu_qlora_recipe_loads_the_dynamic_4bit_twin_on_every_backend():
    payload = plan_json("qwen3-8b-qlora-chat-style-1gpu.yaml", "unsloth")
    assert (
        payload["model"] == "unsloth/Qwen3-8B-unsloth-bnb-4bit"
        and payload["prequantized_from"] == "Qwen/Qwen3-8B"
    )
    assert payload["from_pretrained"]["load_in_4bit"] is True and payload["trainer_args"]["bf16"] is True
    peft = plan_json(
        "qwen3-8b-qlora-chat-style-1gpu.yaml", "peft"
    )  # the same stored weights, not re-quantized
    assert peft["model"] == "unsloth/Qwen3-8B-unsloth-bnb-4bit" and peft["quantization"] is None
    swift = plan_json("qwen3-8b-qlora-chat-style-1gpu.yaml", "swift")["argv"]
    assert (
        swift[swift.index("--model") + 1] == "unsloth/Qwen3-8B-unsloth-bnb-4bit"
        and "--quant_method" not in swift
    )


def test_the_dynamic_4bit_recipe_runs_unsloths_weights_on_eight_swift_processes():
    plan = json.loads(unify("plan", str(RECIPES / "qwen3-8b-dynamic4bit-8gpu.yaml"), "--json").stdout)
    assert plan["backend"] == "swift" and plan["world_size"] == 8
    argv = plan["program"]["argv"]
    assert argv[argv.index("--model") + 1] == "unsloth/Qwen3-8B-unsloth-bnb-4bit"
    assert argv[argv.index("--model_type") + 1] == "qwen3" and "--quant_method" not in argv
    assert plan["program"]["env"]["NPROC_PER_NODE"] == "8"
    assert any(
        note.startswith("pre-quantized 4-bit weights: unsloth/Qwen3-8B-unsloth-bnb-4bit")
        for note in plan["notes"]
    )
    shown = unify("plan", str(RECIPES / "qwen3-8b-dynamic4bit-8gpu.yaml"))
    assert (
        "memory estimate per GPU" in shown.stdout + shown.stderr
        and "ddp over 8 processes" in shown.stdout + shown.stderr
    )
    sharded = unify(
        "validate", str(RECIPES / "qwen3-8b-dynamic4bit-8gpu.yaml"), "--set", "compute.strategy=fsdp2"
    )
    assert sharded.returncode == 2 and "cannot shard" in sharded.stderr


def test_validate_lists_what_this_machine_lacks_without_failing(tiny_recipe):
    result = unify("validate", str(RECIPES / "qwen3-8b-lora-zero2-8gpu.yaml"))
    assert result.returncode == 0, result.stderr
    assert "not runnable on this machine" in result.stdout and "CUDA" in result.stdout
    # but a run refuses before writing anything
    from unifier.environment import cuda_visible

    if cuda_visible():
        return
    refused = unify("run", str(tiny_recipe({"compute.device": "cuda"})), "--backend", "peft")
    assert refused.returncode == 2 and "no CUDA device is visible" in refused.stderr


def test_swift_backend_options_replace_the_flags_unifier_passes():
    options = "backend_options={swift: {weight_decay: 0.1, template: qwen, target_modules: [q_proj, v_proj]}}"
    argv = plan_json("tiny-cpu-sft.yaml", "swift", "--set", options)["argv"]
    assert argv.count("--weight_decay") == 1 and argv[argv.index("--weight_decay") + 1] == "0.1"
    assert argv.count("--template") == 1 and argv[argv.index("--template") + 1] == "qwen"
    assert argv[argv.index("--target_modules") + 1 : argv.index("--target_modules") + 3] == [
        "q_proj",
        "v_proj",
    ]
