"""`unify import` (issue 14): LLaMA-Factory and axolotl training YAMLs -> unifier recipes. The published example
configs (tests/data/foreign, copied with attribution) import into recipes that validate; a config with local
data goes through `unify validate` with the data read; what cannot be translated is listed."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from unifier.importing import import_file
from unifier.spec import spec_from_dict

from .conftest import ROOT, unify

FOREIGN = ROOT / "tests" / "data" / "foreign"
EXAMPLES = ROOT / "examples" / "data"

# file -> values the imported recipe must hold (dotted paths), from the other tool's documented meaning
EXPECTED = {
    "llamafactory_llama3_lora_sft.yaml": {
        "model.name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct",
        "adapter.type": "lora",
        "adapter.r": 8,
        "adapter.alpha": 16,  # LLaMA-Factory: lora_alpha defaults to 2 x lora_rank
        "adapter.target_modules": "all-linear",
        "training.learning_rate": 1.0e-4,
        "training.epochs": 3.0,
        "training.per_device_batch_size": 1,
        "training.gradient_accumulation_steps": 8,
        "training.lr_scheduler": "cosine",
        "training.warmup_ratio": 0.1,
        "training.gradient_checkpointing": True,  # on by default in LLaMA-Factory
        "model.dtype": "bfloat16",
        "model.max_seq_length": 2048,
        "data.train.0.max_rows": 1000,
    },
    "llamafactory_llama3_lora_sft_otfq.yaml": {"adapter.type": "qlora", "quantization.bits": 4},
    "llamafactory_qwen3_lora_sft_otfq.yaml": {
        "adapter.type": "qlora",
        "quantization.bits": 4,
        "model.chat_template": "tokenizer",  # LLaMA-Factory's qwen3 template is Qwen3's own format, not ChatML
    },
    "llamafactory_llama3_lora_dpo.yaml": {
        "training.method": "dpo",
        "training.dpo.beta": 0.1,
        "training.dpo.loss_type": "sigmoid",
        "data.train.0.format": "preference",
    },
    "llamafactory_llama3_lora_sft_ds3.yaml": {"compute.strategy": "zero3"},
    "llamafactory_llama3_full_sft.yaml": {
        "adapter.type": "full",
        "compute.strategy": "zero3",
        "data.eval_split": 0.1,
    },
    "axolotl_lora_1b.yaml": {
        "model.name_or_path": "NousResearch/Llama-3.2-1B",
        "adapter.type": "lora",
        "adapter.r": 16,
        "adapter.alpha": 32,
        "training.per_device_batch_size": 2,  # micro_batch_size: per GPU
        "training.gradient_accumulation_steps": 2,
        "training.learning_rate": 0.0002,
        "data.train.0.format": "alpaca",
        "data.packing": True,
        "model.dtype": "bfloat16",  # bf16: auto
    },
    "axolotl_qlora_1b.yaml": {
        "adapter.type": "qlora",
        "quantization.bits": 4,
        "adapter.r": 32,
        "training.optimizer": "adamw_8bit",  # adamw_bnb_8bit
    },
    "axolotl_instruct_lora_8b.yaml": {"adapter.target_modules": "all-linear", "quantization.bits": 8},
    "axolotl_instruct_dpo_lora_8b.yaml": {"training.method": "dpo", "data.train.0.format": "preference"},
    "axolotl_qlora_dpo.yaml": {"training.method": "dpo", "adapter.type": "qlora"},
    "axolotl_lora_1b_ray_deepspeed.yaml": {"compute.strategy": "zero3"},
}


def value_at(recipe: dict, dotted: str):
    node = recipe
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def tool_of(name: str) -> str:
    return "llamafactory" if name.startswith("llamafactory") else "axolotl"


def test_every_published_example_is_covered():
    assert sorted(EXPECTED) == sorted(p.name for p in FOREIGN.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_example_imports_into_a_valid_recipe(name):
    imported = import_file(FOREIGN / name, tool_of(name))
    spec_from_dict(imported.recipe, source=name)
    for dotted, expected in EXPECTED[name].items():
        assert value_at(imported.recipe, dotted) == expected, (name, dotted)
    # every key of the source is translated, listed as not translated, or named as the other tool's own setting
    source = {k for k, v in yaml.safe_load((FOREIGN / name).read_text()).items() if v is not None}
    listed = " ".join(imported.untranslated + imported.notes)
    text = imported.text(name, tool_of(name))
    assert yaml.safe_load(text) == imported.recipe
    assert source, name
    assert all(
        item.split(":")[0] in source or item.startswith(("dataset", "report_to"))
        for item in imported.untranslated
    )
    assert "no unifier equivalent" not in listed or name.startswith("axolotl")


def test_llamafactory_config_with_local_data_validates_and_plans(tmp_path):
    """dataset names resolved through dataset_info.json (alpaca with mapped columns, sharegpt), a DeepSpeed file
    read for its stage and offload; the written recipe passes `unify validate` with its data read."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(12)
        )
    )
    shutil.copy(EXAMPLES / "support_sharegpt.json", data / "support.json")
    (data / "dataset_info.json").write_text(
        json.dumps(
            {
                "qa": {"file_name": "qa.jsonl", "columns": {"prompt": "question", "response": "answer"}},
                "support": {"file_name": "support.json", "formatting": "sharegpt"},
            }
        )
    )
    (tmp_path / "ds_z2_offload.json").write_text(
        json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
    )
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct",
                "stage": "sft",
                "finetuning_type": "lora",
                "lora_rank": 4,
                "lora_target": "q_proj,v_proj",
                "dataset": "qa,support",
                "template": "qwen",
                "cutoff_len": 256,
                "learning_rate": "2e-4",  # a string to PyYAML
                "max_steps": 5,
                "per_device_train_batch_size": 2,
                "deepspeed": "ds_z2_offload.json",
                "report_to": "tensorboard",
                "unknown_key": 1,
            }
        )
    )
    out = tmp_path / "recipe.yaml"
    result = unify("import", str(config), "--from", "llamafactory", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "unknown_key: no unifier equivalent" in result.stderr
    recipe = yaml.safe_load(out.read_text())
    assert recipe["compute"]["strategy"] == "zero2_offload"
    assert recipe["adapter"]["target_modules"] == ["q_proj", "v_proj"] and recipe["adapter"]["alpha"] == 8
    assert recipe["training"]["learning_rate"] == 2e-4
    assert recipe["data"]["train"][0]["columns"] == {"instruction": "question", "output": "answer"}
    assert recipe["data"]["train"][1]["format"] == "sharegpt"
    assert recipe["output"]["report_to"] == ["tensorboard"]
    assert "# not translated:" in out.read_text()

    tiny = ["--set", "model.name_or_path=builtin:tiny-qwen2", "--set", "model.dtype=float32"]
    tiny += ["--set", "compute.strategy=ddp", "--set", "compute.device=cpu"]
    checked = unify("validate", str(out), *tiny)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data: 20 train rows" in checked.stdout  # 12 alpaca rows + 8 sharegpt conversations


def test_axolotl_config_with_local_chat_data_validates(tmp_path):
    shutil.copy(EXAMPLES / "support_sharegpt.json", tmp_path / "chats.json")
    config = tmp_path / "axolotl.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": "Qwen/Qwen2.5-0.5B",
                "adapter": "lora",
                "lora_r": 8,
                "lora_alpha": 16,
                "lora_target_linear": True,
                "datasets": [
                    {
                        "path": "chats.json",
                        "type": "chat_template",
                        "field_messages": "conversations",
                        "message_property_mappings": {"role": "from", "content": "value"},
                    }
                ],
                "chat_template": "chatml",
                "sequence_len": 256,
                "micro_batch_size": 2,
                "num_epochs": 1,
                "learning_rate": 0.001,
                "wandb_project": None,
                "use_tensorboard": True,
            }
        )
    )
    out = tmp_path / "recipe.yaml"
    result = unify("import", str(config), "--from", "axolotl", "--output", str(out))
    assert result.returncode == 0, result.stderr
    recipe = yaml.safe_load(out.read_text())
    assert recipe["data"]["train"][0]["format"] == "sharegpt"
    assert recipe["output"]["report_to"] == ["tensorboard"]
    checked = unify(
        "validate", str(out), "--set", "model.name_or_path=builtin:tiny-qwen2", "--set", "model.dtype=float32"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data: 8 train rows" in checked.stdout


@pytest.mark.parametrize(
    "tool,config,message",
    [
        ("llamafactory", {"model_name_or_path": "m", "stage": "ppo", "dataset": "x"}, "stage 'ppo'"),
        (
            "llamafactory",
            {"model_name_or_path": "m", "finetuning_type": "freeze", "dataset": "x"},
            "finetuning_type 'freeze'",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "learning_rate": "fast"},
            "learning_rate: expected a number",
        ),
        ("axolotl", {"base_model": "m", "rl": "grpo", "datasets": [{"path": "x"}]}, "rl 'grpo'"),
        ("axolotl", {"base_model": "m", "adapter": "lora"}, "datasets: the config lists no dataset"),
        ("unknown", {"model_name_or_path": "m"}, "--from 'unknown'"),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "learning_rate": True},
            "learning_rate: expected a number",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "lora_rank": 8.7},
            "lora_rank: expected a whole number",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": 5},
            "dataset: expected a name or a list of names",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "template": ["x"]},
            "template: expected text",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "bf16": "yes"},
            "bf16: expected true, false or auto",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "report_to": 5},
            "report_to: expected tracker names",
        ),
        (
            "llamafactory",
            {"model_name_or_path": "m", "dataset": "x", "deepspeed": {"zero_optimization": [3]}},
            "zero_optimization.stage",
        ),
        ("axolotl", {"base_model": "m", "datasets": 5}, "datasets: expected a list"),
        (
            "axolotl",
            {"base_model": "m", "datasets": [{"path": "x", "type": "chat_template", "roles": ["a"]}]},
            "a value has a shape axolotl does not use",
        ),
    ],
)
def test_untranslatable_configs_exit_2_and_write_nothing(tmp_path, tool, config, message):
    source = tmp_path / "config.yaml"
    source.write_text(yaml.safe_dump(config))
    out = tmp_path / "recipe.yaml"
    result = unify("import", str(source), "--from", tool, "--output", str(out))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_import_does_not_overwrite_without_force(tmp_path):
    out = tmp_path / "recipe.yaml"
    out.write_text("mine\n")
    result = unify("import", str(FOREIGN / "axolotl_lora_1b.yaml"), "--from", "axolotl", "--output", str(out))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert out.read_text() == "mine\n"
    forced = unify(
        "import", str(FOREIGN / "axolotl_lora_1b.yaml"), "--from", "axolotl", "--output", str(out), "--force"
    )
    assert forced.returncode == 0 and "adapter:" in out.read_text()


def test_output_problems_exit_2_and_the_source_is_never_overwritten(tmp_path):
    source = tmp_path / "config.yaml"
    shutil.copy(FOREIGN / "axolotl_lora_1b.yaml", source)
    before = source.read_text()
    for output, message in (
        (source, "is the file being imported"),
        (tmp_path, "a folder"),
        (tmp_path / "missing" / "recipe.yaml", "does not exist"),
    ):
        result = unify("import", str(source), "--from", "axolotl", "--output", str(output), "--force")
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert source.read_text() == before


def test_keys_left_out_take_the_other_tools_defaults(tmp_path):
    lf = tmp_path / "lf.yaml"
    lf.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset": "x", "lora_rank": 0}))
    imported = import_file(lf, "llamafactory")
    training = imported.recipe["training"]
    assert (training["learning_rate"], training["epochs"], training["per_device_batch_size"]) == (
        5e-5,
        3.0,
        8,
    )
    assert imported.recipe["adapter"]["r"] == 0  # 0 is a value (refused by validation), not unset
    assert any("llamafactory's defaults written" in note for note in imported.notes)
    ax = tmp_path / "ax.yaml"
    ax.write_text(
        yaml.safe_dump(
            {
                "base_model": "m",
                "adapter": "lora",
                "lora_target_modules": "q_proj",
                "datasets": [{"path": "d"}],
            }
        )
    )
    imported = import_file(ax, "axolotl")
    assert imported.recipe["training"]["lr_scheduler"] == "cosine"  # axolotl's default, not unifier's
    assert imported.recipe["adapter"]["target_modules"] == ["q_proj"]


def imported_from(tmp_path, tool: str, config: dict):
    path = tmp_path / f"{tool}.yaml"
    path.write_text(yaml.safe_dump(config))
    return import_file(path, tool)


def test_keys_with_a_unifier_equivalent_are_translated_not_listed(tmp_path):
    """What a new user's configs held: each key with a unifier equivalent lands in the recipe (and the recipe is
    valid), none of them in the not-translated list."""
    lf = imported_from(
        tmp_path,
        "llamafactory",
        {
            "model_name_or_path": "m",
            "dataset": "x",
            "train_on_prompt": True,
            "lr_scheduler_type": "cosine_with_min_lr",
            "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        },
    )
    assert lf.recipe["data"]["assistant_only_loss"] is False  # loss on the prompts too, as asked
    assert (lf.recipe["training"]["lr_scheduler"], lf.recipe["training"]["min_lr_ratio"]) == ("cosine", 0.1)
    absolute = imported_from(
        tmp_path,
        "llamafactory",
        {
            "model_name_or_path": "m",
            "dataset": "x",
            "learning_rate": 1e-4,
            "lr_scheduler_type": "cosine_with_min_lr",
            "lr_scheduler_kwargs": '{"min_lr": 1e-5}',
        },
    )
    assert absolute.recipe["training"]["min_lr_ratio"] == pytest.approx(0.1)
    ax = imported_from(
        tmp_path,
        "axolotl",
        {
            "base_model": "m",
            "adapter": "lora",
            "datasets": [{"path": "d", "type": "alpaca"}],
            "optimizer": "paged_adamw_32bit",
            "lr_scheduler": "cosine",
            "cosine_min_lr_ratio": 0.2,
            "train_on_inputs": True,
        },
    )
    assert ax.recipe["training"]["optimizer"] == "paged_adamw_32bit"
    assert ax.recipe["training"]["min_lr_ratio"] == 0.2 and ax.recipe["data"]["assistant_only_loss"] is False
    for imported in (lf, absolute, ax):
        spec_from_dict(imported.recipe, source="imported")
        listed = " ".join(imported.untranslated)
        for key in ("train_on_prompt", "lr_scheduler", "optimizer", "cosine_min_lr_ratio", "train_on_inputs"):
            assert key not in listed, (key, imported.untranslated)


def test_scheduler_and_optimizer_reach_every_backend(tmp_path):
    from unifier.core import plan
    from unifier.spec import load_spec

    from .test_translation import config_value, flag_values

    recipe = tmp_path / "r.yaml"
    recipe.write_text((ROOT / "recipes" / "tiny-cpu-sft.yaml").read_text())
    overrides = [
        "training.lr_scheduler=cosine",
        "training.min_lr_ratio=0.1",
        "training.optimizer=paged_adamw_32bit",
    ]
    spec = load_spec(recipe, overrides)
    argv = plan(spec, "swift").program.argv
    assert flag_values(argv, "--lr_scheduler_type") == ["cosine_with_min_lr"]
    assert json.loads(flag_values(argv, "--lr_scheduler_kwargs")[0]) == {"min_lr_rate": 0.1}
    assert flag_values(argv, "--optim") == ["paged_adamw_32bit"]
    for backend in ("peft", "unsloth"):
        config = plan(spec, backend).program.config
        assert config_value(config, "trainer_args.lr_scheduler_type") == "cosine_with_min_lr"
        assert config_value(config, "trainer_args.lr_scheduler_kwargs") == {"min_lr_rate": 0.1}
        assert config_value(config, "trainer_args.optim") == "paged_adamw_32bit"
    refused = unify("validate", str(recipe), "--set", "training.min_lr_ratio=0.1")  # the recipe is linear
    assert (
        refused.returncode == 2 and "min_lr_ratio 0.1 applies to lr_scheduler cosine only" in refused.stderr
    )


def test_cosine_with_min_lr_without_its_floor_is_refused(tmp_path):
    config = tmp_path / "lf.yaml"
    config.write_text(
        yaml.safe_dump({"model_name_or_path": "m", "dataset": "x", "lr_scheduler_type": "cosine_with_min_lr"})
    )
    result = unify("import", str(config), "--from", "llamafactory", "-o", str(tmp_path / "out.yaml"))
    assert result.returncode == 2 and "needs lr_scheduler_kwargs with min_lr_rate" in result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_axolotl_message_keys_and_fixed_column_dpo_strategies(tmp_path):
    chats = tmp_path / "chats.json"
    shutil.copy(EXAMPLES / "support_sharegpt.json", chats)
    base = {"base_model": "builtin:tiny-qwen2", "adapter": "lora", "sequence_len": 256}
    legacy = {"path": str(chats), "type": "chat_template", "field_messages": "conversations"}
    legacy |= {"message_field_role": "from", "message_field_content": "value"}
    imported = imported_from(tmp_path, "axolotl", {**base, "datasets": [legacy]})
    source = imported.recipe["data"]["train"][0]
    assert source["format"] == "sharegpt"
    out = tmp_path / "recipe.yaml"
    out.write_text(imported.text("axolotl.yaml", "axolotl"))
    checked = unify("validate", str(out), "--set", "model.dtype=float32")
    assert checked.returncode == 0 and "data: 8 train rows" in checked.stdout, checked.stdout + checked.stderr
    odd = {**legacy, "message_field_role": "speaker", "message_field_content": "text"}
    config = tmp_path / "odd.yaml"
    config.write_text(yaml.safe_dump({**base, "datasets": [odd]}))
    refused = unify("import", str(config), "--from", "axolotl", "-o", str(tmp_path / "odd-out.yaml"))
    assert refused.returncode == 2 and "messages keyed 'speaker' / 'text'" in refused.stderr
    pairs = tmp_path / "intel.jsonl"
    rows = [
        {"system": "Be brief.", "question": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}
        for i in range(6)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    intel = imported_from(
        tmp_path, "axolotl", {**base, "rl": "dpo", "datasets": [{"path": str(pairs), "type": "chatml.intel"}]}
    )
    assert intel.recipe["data"]["train"][0] == {
        "path": str(pairs),
        "format": "preference",
        "columns": {"prompt": "question"},
    }
    out = tmp_path / "intel-recipe.yaml"
    out.write_text(intel.text("axolotl.yaml", "axolotl"))
    checked = unify("validate", str(out), "--set", "model.dtype=float32")
    assert checked.returncode == 0 and "6 train rows" in checked.stdout, checked.stdout + checked.stderr


def test_formats_with_no_unifier_equivalent_are_listed_not_swapped_for_another(tmp_path):
    lf = imported_from(
        tmp_path, "llamafactory", {"model_name_or_path": "m", "dataset": "x", "template": "alpaca"}
    )
    assert "chat_template" not in lf.recipe.get("model", {})  # not silently the model's own
    assert any(
        item.startswith("template: 'alpaca' is LLaMA-Factory's own prompt format") for item in lf.untranslated
    )
    family = imported_from(
        tmp_path, "llamafactory", {"model_name_or_path": "m", "dataset": "x", "template": "llama3"}
    )
    assert family.recipe["model"]["chat_template"] == "tokenizer"
    dataset = {"path": "d.jsonl", "type": "chat_template", "roles_to_train": ["user", "assistant"]}
    dataset |= {"train_on_eos": "all", "chat_template": "chatml", "shards": 4}
    ax = imported_from(
        tmp_path,
        "axolotl",
        {
            "base_model": "m",
            "adapter": "lora",
            "datasets": [dataset],
            "chat_template": "jinja",
            "chat_template_jinja": "{{ x }}",
        },
    )
    listed = "\n".join(ax.untranslated)
    for key in ("roles_to_train", "train_on_eos", "chat_template:", "shards", "chat_template_jinja"):
        assert key in listed, (key, listed)
    assert "chat_template" not in ax.recipe.get("model", {})
    fallback = imported_from(
        tmp_path,
        "axolotl",
        {
            "base_model": "m",
            "adapter": "lora",
            "datasets": [{"path": "d"}],
            "chat_template": "tokenizer_default_fallback_chatml",
        },
    )
    assert fallback.recipe["model"]["chat_template"] == "auto"


@pytest.mark.parametrize(
    ("tool", "config", "expected"),
    [
        (
            "llamafactory",
            {"stage": "dpo", "pref_loss": "orpo", "pref_beta": 0.2},
            {"method": "orpo", "orpo": {"beta": 0.2}},
        ),
        (  # LLaMA-Factory's own defaults where the config is silent: pref_beta 0.1, simpo_gamma 0.5
            "llamafactory",
            {"stage": "dpo", "pref_loss": "simpo"},
            {"method": "simpo", "simpo": {"beta": 0.1, "gamma": 0.5}},
        ),
        ("axolotl", {"rl": "orpo", "orpo_alpha": 0.15}, {"method": "orpo", "orpo": {"beta": 0.15}}),
        (  # axolotl passes what it is given to trl's CPO: trl's defaults otherwise (cpo_alpha 1.0)
            "axolotl",
            {"rl": "simpo", "rl_beta": 2.5, "simpo_gamma": 1.2},
            {"method": "simpo", "simpo": {"beta": 2.5, "gamma": 1.2, "nll_weight": 1.0}},
        ),
    ],
)
def test_reference_free_preference_methods_import_with_the_tools_own_defaults(
    tmp_path, tool, config, expected
):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q?", "chosen": "Good.", "rejected": "Bad."}) + "\n")
    if tool == "llamafactory":
        (tmp_path / "data").mkdir()
        shutil.copy(pairs, tmp_path / "data" / "pairs.jsonl")
        info = {"pairs": {"file_name": "pairs.jsonl", "ranking": True}}
        (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(info))
        base = {
            "model_name_or_path": "builtin:tiny-qwen2",
            "dataset": "pairs",
            "dataset_dir": str(tmp_path / "data"),
        }
    else:
        base = {"base_model": "builtin:tiny-qwen2", "adapter": "lora", "datasets": [{"path": str(pairs)}]}
    imported = imported_from(tmp_path, tool, {**base, **config})
    training = imported.recipe["training"]
    assert {key: training[key] for key in expected} == expected
    assert imported.recipe["data"]["train"][0]["format"] == "preference"
    spec = spec_from_dict(imported.recipe)
    assert spec.training.method == expected["method"]
    assert not [line for line in imported.untranslated if any(key in line for key in config)], (
        imported.untranslated
    )
