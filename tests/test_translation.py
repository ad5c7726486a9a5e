"""Every spec field on which the backends' own defaults disagree reaches each backend's native arguments.

Each value below differs from the spec's default and from every backend's own default (ms-swift's
weight decay 0.1 / beta2 0.95 / cosine / alpha 32 / dropout 0.05 / batch 1 / automatic accumulation,
unsloth's alpha 16 / dropout 0 / random_state 3407 / "unsloth" checkpointing, trl's bf16=True...), so a
dropped or hard-coded translation fails here in seconds, before any parity run.
"""

from __future__ import annotations

import copy

import pytest

from unifier.core import plan
from unifier.spec import spec_from_dict

from .conftest import load_recipe

# field -> (value, peft CONFIG path, swift flag, unsloth CONFIG path, expected native value or None = value)
TABLE = [
    (
        "training.learning_rate",
        3.3e-4,
        "trainer_args.learning_rate",
        "--learning_rate",
        "trainer_args.learning_rate",
    ),
    (
        "training.weight_decay",
        0.037,
        "trainer_args.weight_decay",
        "--weight_decay",
        "trainer_args.weight_decay",
    ),
    ("training.adam_beta1", 0.85, "trainer_args.adam_beta1", "--adam_beta1", "trainer_args.adam_beta1"),
    ("training.adam_beta2", 0.987, "trainer_args.adam_beta2", "--adam_beta2", "trainer_args.adam_beta2"),
    (
        "training.adam_epsilon",
        3e-7,
        "trainer_args.adam_epsilon",
        "--adam_epsilon",
        "trainer_args.adam_epsilon",
    ),
    (
        "training.max_grad_norm",
        0.7,
        "trainer_args.max_grad_norm",
        "--max_grad_norm",
        "trainer_args.max_grad_norm",
    ),
    (
        "training.lr_scheduler",
        "constant_with_warmup",
        "trainer_args.lr_scheduler_type",
        "--lr_scheduler_type",
        "trainer_args.lr_scheduler_type",
    ),
    ("training.warmup_steps", 7, "trainer_args.warmup_steps", "--warmup_steps", "trainer_args.warmup_steps"),
    ("training.optimizer", "sgd", "trainer_args.optim", "--optim", "trainer_args.optim"),
    (
        "training.per_device_batch_size",
        3,
        "trainer_args.per_device_train_batch_size",
        "--per_device_train_batch_size",
        "trainer_args.per_device_train_batch_size",
    ),
    (
        "training.gradient_accumulation_steps",
        5,
        "trainer_args.gradient_accumulation_steps",
        "--gradient_accumulation_steps",
        "trainer_args.gradient_accumulation_steps",
    ),
    ("training.max_steps", 17, "trainer_args.max_steps", "--max_steps", "trainer_args.max_steps"),
    ("training.seed", 123, "trainer_args.seed", "--seed", "lora.random_state"),
    (
        "training.logging_steps",
        3,
        "trainer_args.logging_steps",
        "--logging_steps",
        "trainer_args.logging_steps",
    ),
    ("training.save_steps", 11, "trainer_args.save_steps", "--save_steps", "trainer_args.save_steps"),
    (
        "training.save_total_limit",
        3,
        "trainer_args.save_total_limit",
        "--save_total_limit",
        "trainer_args.save_total_limit",
    ),
    (
        "training.gradient_checkpointing",
        True,
        "trainer_args.gradient_checkpointing",
        "--gradient_checkpointing",
        "lora.use_gradient_checkpointing",
    ),
    ("data.seed", 7, "trainer_args.data_seed", "--data_seed", "trainer_args.data_seed"),
    (
        "model.max_seq_length",
        333,
        "trainer_args.max_length",
        "--max_length",
        "from_pretrained.max_seq_length",
    ),
    ("adapter.r", 12, "lora.r", "--lora_rank", "lora.r"),
    ("adapter.alpha", 24, "lora.lora_alpha", "--lora_alpha", "lora.lora_alpha"),
    ("adapter.dropout", 0.07, "lora.lora_dropout", "--lora_dropout", "lora.lora_dropout"),
    ("adapter.use_rslora", True, "lora.use_rslora", "--use_rslora", "lora.use_rslora"),
    (
        "adapter.target_modules",
        ["q_proj", "v_proj"],
        "lora.target_modules",
        "--target_modules",
        "lora.target_modules",
    ),
]
DPO_TABLE = [
    ("training.dpo.beta", 0.23, "trainer_args.beta", "--beta", "trainer_args.beta"),
    ("training.dpo.loss_type", "ipo", "trainer_args.loss_type", "--loss_type", "trainer_args.loss_type"),
]
PAIR_METHOD_TABLE = [  # (method, field, value, trl argument, ms-swift flag): backends' defaults disagree on each
    ("orpo", "training.orpo.beta", 0.33, "trainer_args.beta", "--beta"),
    ("simpo", "training.simpo.beta", 2.5, "trainer_args.beta", "--beta"),
    ("simpo", "training.simpo.gamma", 0.7, "trainer_args.simpo_gamma", "--simpo_gamma"),
    ("simpo", "training.simpo.nll_weight", 0.4, "trainer_args.cpo_alpha", "--cpo_alpha"),
    (
        "reward",
        "training.reward.center_coefficient",
        0.01,
        "trainer_args.center_rewards_coefficient",
        "--center_rewards_coefficient",
    ),
]
QUANT_TABLE = [  # peft and swift (unsloth fixes NF4 with double quantization)
    (
        "quantization.double_quant",
        False,
        "quantization.bnb_4bit_use_double_quant",
        "--bnb_4bit_use_double_quant",
        None,
    ),
    ("quantization.quant_type", "fp4", "quantization.bnb_4bit_quant_type", "--bnb_4bit_quant_type", None),
    (
        "quantization.compute_dtype",
        "float16",
        "quantization.bnb_4bit_compute_dtype",
        "--bnb_4bit_compute_dtype",
        None,
    ),
]


def spec_with(changes: dict):
    raw = load_recipe()
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return spec_from_dict(raw)


def config_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def flag_values(argv: tuple, name: str) -> list[str]:
    index = argv.index(name)
    values = []
    for part in argv[index + 1 :]:
        if part.startswith("--"):
            break
        values.append(part)
    return values


def native(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return ["true" if v is True else "false" if v is False else str(v) for v in values]


def check(field, value, peft_key, swift_flag, unsloth_key, base=None):
    spec = spec_with({**(base or {}), field: value})
    expected = [value] if field == "training.dpo.loss_type" else value
    assert config_value(plan(spec, "peft").program.config, peft_key) == expected, (field, "peft")
    assert flag_values(plan(spec, "swift").program.argv, swift_flag) == native(value), (field, "swift")
    if unsloth_key:
        assert config_value(plan(spec, "unsloth").program.config, unsloth_key) == expected, (field, "unsloth")


@pytest.mark.parametrize(
    "field, value, peft_key, swift_flag, unsloth_key", TABLE, ids=[row[0] for row in TABLE]
)
def test_each_field_reaches_every_backend(field, value, peft_key, swift_flag, unsloth_key):
    check(field, value, peft_key, swift_flag, unsloth_key)


@pytest.mark.parametrize(
    "method, field, value, trl_key, swift_flag", PAIR_METHOD_TABLE, ids=[r[1] for r in PAIR_METHOD_TABLE]
)
def test_reference_free_method_options_reach_every_backend(method, field, value, trl_key, swift_flag):
    spec = spec_with(
        {"training.method": method, "data.train": [{"path": "builtin:tiny-preference"}], field: value}
    )
    trainers = {
        "orpo": "trl.experimental.orpo:ORPOTrainer",
        "simpo": "trl.experimental.cpo:CPOTrainer",
        "reward": "trl:RewardTrainer",
    }
    for backend in ("peft", "unsloth") if method != "reward" else ("peft",):  # unsloth trains causal LMs only
        config = plan(spec, backend).program.config
        assert config_value(config, trl_key) == value, (field, backend)
        assert config["trainer_classes"]["trainer"] == trainers[method]
    argv = plan(spec, "swift").program.argv
    assert argv[:2] == ("swift", "rlhf")
    assert flag_values(argv, "--rlhf_type") == [{"reward": "rm"}.get(method, method)]
    assert flag_values(argv, swift_flag) == native(value), (field, "swift")
    if method == "simpo":  # ms-swift's simpo is cpo with loss_type simpo: unifier says so on every backend
        assert flag_values(argv, "--loss_type") == ["simpo"]
        assert config_value(plan(spec, "peft").program.config, "trainer_args.loss_type") == "simpo"


@pytest.mark.parametrize(
    "field, value, peft_key, swift_flag, unsloth_key", DPO_TABLE, ids=[r[0] for r in DPO_TABLE]
)
def test_dpo_fields_reach_every_backend(field, value, peft_key, swift_flag, unsloth_key):
    check(
        field,
        value,
        peft_key,
        swift_flag,
        unsloth_key,
        base={"training.method": "dpo", "data.train": [{"path": "builtin:tiny-preference"}]},
    )


@pytest.mark.parametrize(
    "field, value, peft_key, swift_flag, unsloth_key", QUANT_TABLE, ids=[r[0] for r in QUANT_TABLE]
)
def test_quantization_fields_reach_peft_and_swift(field, value, peft_key, swift_flag, unsloth_key):
    check(
        field,
        value,
        peft_key,
        swift_flag,
        unsloth_key,
        base={"adapter.type": "qlora", "quantization.bits": 4, "model.dtype": "bfloat16"},
    )


def test_precision_and_the_defaults_no_backend_may_bring():
    spec = spec_with({"model.dtype": "bfloat16"})
    peft, unsloth = plan(spec, "peft").program.config, plan(spec, "unsloth").program.config
    argv = plan(spec, "swift").program.argv
    assert peft["trainer_args"]["bf16"] is True and peft["trainer_args"]["fp16"] is False
    assert flag_values(argv, "--bf16") == ["true"] and flag_values(argv, "--fp16") == ["false"]
    assert (
        flag_values(argv, "--torch_dtype") == ["bfloat16"]
        and unsloth["from_pretrained"]["dtype"] == "bfloat16"
    )
    fp32 = plan(spec_with({}), "swift").program.argv  # ms-swift would switch fp16 on for a float32 model
    assert flag_values(fp32, "--fp16") == ["false"] and flag_values(fp32, "--bf16") == ["false"]
    # the defaults each backend would otherwise bring, pinned: shuffling off, no versioned folders, no NaN filter
    assert flag_values(argv, "--dataset_shuffle") == ["false"] and flag_values(argv, "--add_version") == [
        "false"
    ]
    assert flag_values(argv, "--train_dataloader_shuffle") == ["false"]
    assert flag_values(argv, "--logging_nan_inf_filter") == ["false"]
    assert (
        peft["trainer_args"]["logging_nan_inf_filter"] is False
        and peft["trainer_args"]["shuffle_dataset"] is False
    )
    assert (
        unsloth["from_pretrained"]["load_in_4bit"] is False
        and unsloth["from_pretrained"]["use_exact_model_name"]
    )


def test_the_table_covers_every_field_the_backends_disagree_on():
    """A field added to the spec with a backend-specific default must be added here (or to the coverage test's
    NOT_IN_PLAN): the list of such fields is written down once."""
    disagreeing = {
        "training.learning_rate",
        "training.weight_decay",
        "training.adam_beta1",
        "training.adam_beta2",
        "training.adam_epsilon",
        "training.max_grad_norm",
        "training.lr_scheduler",
        "training.warmup_steps",
        "training.optimizer",
        "training.per_device_batch_size",
        "training.gradient_accumulation_steps",
        "training.seed",
        "training.gradient_checkpointing",
        "adapter.r",
        "adapter.alpha",
        "adapter.dropout",
        "adapter.use_rslora",
        "adapter.target_modules",
        "training.dpo.beta",
        "training.dpo.loss_type",
        "quantization.double_quant",
        "quantization.compute_dtype",
        "model.max_seq_length",
        "data.seed",
    }
    disagreeing |= {
        "training.orpo.beta",
        "training.simpo.beta",
        "training.simpo.gamma",
        "training.simpo.nll_weight",
        "training.reward.center_coefficient",
    }
    covered = {row[0] for row in TABLE + DPO_TABLE + QUANT_TABLE} | {row[1] for row in PAIR_METHOD_TABLE}
    assert disagreeing <= covered, disagreeing - covered


def test_eval_data_without_eval_steps_evaluates_nowhere_during_training():
    spec = spec_with({"data.eval_split": 0.1})
    peft = plan(spec, "peft").program.config["trainer_args"]
    assert peft["eval_strategy"] == "no" and "eval_steps" not in peft
    assert flag_values(plan(spec, "swift").program.argv, "--eval_strategy") == ["no"]
    every = plan(spec_with({"data.eval_split": 0.1, "training.eval_steps": 3}), "peft").program.config
    assert every["trainer_args"]["eval_strategy"] == "steps" and every["trainer_args"]["eval_steps"] == 3
