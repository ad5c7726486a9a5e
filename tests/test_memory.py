"""The memory estimate `unify plan` prints (issue 14), checked part by part against tensors measured on CPU on
the tiny model: weights (also 4-bit NF4), trainable parameters, AdamW's states, and what autograd saves for the
backward pass (a saved-tensors hook adds up the distinct storages), with and without gradient checkpointing."""

from __future__ import annotations

import pytest
import yaml

from unifier.memory import activation_parts, estimate, weight_shapes
from unifier.model_info import read_model_info
from unifier.spec import apply_overrides, load_spec, spec_from_dict

from .conftest import RECIPES, unify


def measured(spec, info, targets):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(info.location, dtype=torch.float32)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if spec.adapter.type != "full":
        lora = LoraConfig(
            r=spec.adapter.r, lora_alpha=16, lora_dropout=spec.adapter.dropout, target_modules=targets
        )
        model = get_peft_model(model, lora)
    if spec.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(
        0, model.config.vocab_size, (spec.training.per_device_batch_size, spec.model.max_seq_length)
    )
    storages: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    optimizer.step()
    states = sum(
        v.numel() * v.element_size() for s in optimizer.state.values() for k, v in s.items() if k != "step"
    )
    return {
        "weights": weights,
        "trainable": sum(p.numel() for p in trainable),
        "optimizer": states,
        "saved": sum(storages.values()),
    }


@pytest.mark.parametrize(
    "overrides",
    [[], ["training.gradient_checkpointing=true"], ["adapter.dropout=0.1"], ["adapter.type=full"]],
    ids=["lora", "checkpointing", "dropout", "full"],
)
def test_estimate_matches_measured_tensors(tiny_model_dir, overrides):
    spec = load_spec(RECIPES / "tiny-cpu-sft.yaml", overrides)
    info = read_model_info(spec.model.name_or_path)
    targets = info.linear_modules()
    est = estimate(spec, info, targets)
    real = measured(spec, info, targets)
    assert est.weights == real["weights"]
    assert est.trainable == real["trainable"]
    assert est.optimizer == real["optimizer"]
    parts = activation_parts(
        info.config, est.tokens, spec, checkpointing=spec.training.gradient_checkpointing
    )
    assert parts["saved"] == pytest.approx(real["saved"], rel=0.10), (parts, real)
    assert est.activations == sum(parts.values())


def test_four_bit_weights_match_the_quantized_model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    spec = load_spec(RECIPES / "tiny-cpu-qlora.yaml", [])
    info = read_model_info(spec.model.name_or_path)
    est = estimate(spec, info, info.linear_modules())
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(
        info.location, dtype=torch.float32, quantization_config=config
    )
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            if state.state2 is not None:
                total += state.state2.absmax.numel() * state.state2.absmax.element_size()
    assert est.weights == pytest.approx(total, rel=0.02)


def test_config_shapes_equal_the_safetensors_shapes(tiny_model_dir):
    info = read_model_info("builtin:tiny-qwen2")
    assert weight_shapes(info.config) == info.weight_shapes


def test_sharding_and_the_known_model_table():
    spec = load_spec(RECIPES / "qwen3-8b-lora-zero2-8gpu.yaml", [])
    info = read_model_info(spec.model.name_or_path)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    sharded = estimate(spec, info, targets)
    assert sharded.source in ("unifier's table of known models", "config.json", "safetensors headers")
    assert 8.0e9 < sharded.params < 8.4e9  # Qwen3-8B: 8.19B parameters
    single = estimate(
        load_spec(RECIPES / "qwen3-8b-lora-zero2-8gpu.yaml", ["compute.nproc_per_node=1"]), info, targets
    )
    assert sharded.weights == single.weights  # ZeRO-2 does not shard weights ...
    assert sharded.optimizer == pytest.approx(single.optimizer / 8)  # ... but optimizer states and gradients
    assert sharded.gradients == pytest.approx(single.gradients / 8)


def test_plan_prints_the_estimate_to_stderr_only():
    result = unify("plan", str(RECIPES / "qwen3-8b-qlora-chat-style-1gpu.yaml"), "--backend", "peft")
    assert result.returncode == 0, result.stderr
    assert "memory estimate per GPU" in result.stderr and "memory estimate" not in result.stdout
    assert "weights" in result.stderr and "GiB" in result.stderr


def as_method(method: str, overrides: tuple[str, ...] = ()):
    """recipes/qwen3-8b-qlora-dpo-1gpu.yaml trained with another method (its dpo section swapped for the
    method's own defaults)."""
    raw = yaml.safe_load((RECIPES / "qwen3-8b-qlora-dpo-1gpu.yaml").read_text())
    raw["training"].pop("dpo")
    raw["training"]["method"] = method
    return spec_from_dict(apply_overrides(raw, list(overrides)))


def test_the_estimate_knows_dpo_pairs_and_the_reference_model():
    """DPO runs chosen and rejected in one concatenated batch: twice the tokens (and activations) of SFT at the
    same batch; full fine-tuning adds a frozen reference copy of the weights, LoRA disables the adapter instead.
    ORPO and SimPO also run pairs, without a reference."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    dpo = load_spec(RECIPES / "qwen3-8b-qlora-dpo-1gpu.yaml", [])
    info = read_model_info(dpo.model.name_or_path)
    sft = as_method("sft")
    pairs, single = estimate(dpo, info, targets), estimate(sft, info, targets)
    assert pairs.tokens == 2 * single.tokens == 2 * 2 * 2048
    assert pairs.activations == pytest.approx(2 * single.activations, rel=1e-9)
    assert pairs.weights == single.weights and "dpo: chosen + rejected" in pairs.lines()[0]
    full = ("adapter.type=full", "quantization.bits=null", "training.optimizer=adamw_torch")
    full_dpo = estimate(load_spec(RECIPES / "qwen3-8b-qlora-dpo-1gpu.yaml", list(full)), info, targets)
    full_sft = estimate(as_method("sft", full), info, targets)
    assert full_dpo.weights == pytest.approx(2 * full_sft.weights)  # the policy and its reference
    assert "a frozen reference copy" in full_dpo.lines()[0]
    for method in ("orpo", "simpo"):
        full_pairs = estimate(as_method(method, full), info, targets)
        assert full_pairs.tokens == 2 * single.tokens and full_pairs.weights == pytest.approx(
            full_sft.weights
        )
        assert (
            f"{method}: chosen + rejected" in full_pairs.lines()[0]
            and "reference" not in full_pairs.lines()[0]
        )
    result = unify("plan", str(RECIPES / "qwen3-8b-qlora-dpo-1gpu.yaml"), "--backend", "peft")
    assert result.returncode == 0 and "dpo: chosen + rejected" in result.stderr, result.stderr
