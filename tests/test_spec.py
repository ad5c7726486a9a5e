import json

import pytest

from unifier.errors import UserError
from unifier.spec import JobSpec, apply_overrides, load_spec, spec_from_dict

from .conftest import RECIPES, unify, write_recipe

MINIMAL = {
    "model": {"name_or_path": "builtin:tiny-qwen2"},
    "data": {"train": [{"path": "builtin:tiny-chat"}]},
}


def test_defaults_are_explicit_values_not_backend_defaults():
    spec = spec_from_dict(MINIMAL)
    # each of these differs between ms-swift, unsloth and trl: the spec owns them
    assert spec.training.weight_decay == 0.0
    assert spec.training.adam_beta2 == 0.999
    assert spec.training.lr_scheduler == "linear"
    assert spec.adapter.dropout == 0.0 and spec.adapter.alpha == 32 and spec.adapter.r == 16
    assert spec.training.per_device_batch_size == 1 and spec.training.gradient_accumulation_steps == 1
    assert spec.data.shuffle is True and spec.data.assistant_only_loss is True
    assert spec.model.trust_remote_code is False


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UserError) as info:
        spec_from_dict({**MINIMAL, "training": {"learning_rat": 1e-4}})
    assert "training" in str(info.value) and "did you mean 'learning_rate'" in str(info.value)


def test_wrong_type_names_field_and_value():
    with pytest.raises(UserError) as info:
        spec_from_dict({**MINIMAL, "training": {"learning_rate": "fast"}})
    assert "training.learning_rate" in str(info.value) and "'fast'" in str(info.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"adapter": {"type": "qlora"}}, "needs quantization.bits: 4"),
        ({"adapter": {"type": "full"}, "quantization": {"bits": 4}}, "cannot train quantized weights"),
        ({"compute": {"nnodes": 2, "node_rank": 2}}, "node_rank 2 must be below nnodes 2"),
        ({"training": {"eval_steps": 5}}, "needs evaluation data"),
        ({"backend_options": {"axolotl": {}}}, "unknown backend 'axolotl'"),
    ],
)
def test_contradictions_are_rejected(changes, message):
    with pytest.raises(UserError) as info:
        spec_from_dict({**MINIMAL, **changes})
    assert message in str(info.value)


def test_overrides_parse_yaml_values():
    raw = apply_overrides(
        MINIMAL,
        ["training.learning_rate=1e-4", "data.packing=true", "adapter.target_modules=[q_proj, v_proj]"],
    )
    spec = spec_from_dict(raw)
    assert spec.training.learning_rate == 1e-4 and spec.data.packing is True
    assert spec.adapter.target_modules == ["q_proj", "v_proj"]
    assert "learning_rate" not in MINIMAL.get("training", {})  # the input is not modified


def test_relative_data_paths_resolve_against_the_recipe(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text('{"text": "hello"}\n')
    raw = {**MINIMAL, "data": {"train": [{"path": "d/x.jsonl"}]}}
    spec = load_spec(write_recipe(tmp_path, raw))
    assert spec.data.train[0].path == str(tmp_path / "d" / "x.jsonl")


def test_every_schema_field_has_a_description():
    schema = JobSpec.model_json_schema()
    missing = []
    for name, definition in [("JobSpec", schema), *schema["$defs"].items()]:
        for field, body in definition.get("properties", {}).items():
            if "description" not in body:
                missing.append(f"{name}.{field}")
    assert not missing, missing


def test_shipped_recipes_validate():
    for recipe in sorted(RECIPES.glob("*.yaml")):
        spec = load_spec(recipe)
        assert spec.model.name_or_path


def test_schema_command_prints_json():
    result = unify("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    # training: one section per method, each with the shared settings and its own options
    variants = [ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["training"]["oneOf"]]
    assert variants == [
        "SFTTraining",
        "DPOTraining",
        "KTOTraining",
        "ORPOTraining",
        "SimPOTraining",
        "RewardTraining",
        "GRPOTraining",
    ]
    assert all("learning_rate" in schema["$defs"][name]["properties"] for name in variants)
    assert "orpo" in schema["$defs"]["ORPOTraining"]["properties"]
    assert "orpo" not in schema["$defs"]["SFTTraining"]["properties"]
