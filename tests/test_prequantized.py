"""Pre-quantized 4-bit weights (unifier/prequantized.py): unsloth's dynamic 4-bit checkpoints are ordinary
bitsandbytes-serialized models, so every backend loads the very same stored weights (no second quantization),
and ms-swift and peft train them on several processes. The fixture is the tiny model saved in NF4 with some
modules kept in 16-bit, as unsloth's dynamic quantization keeps its sensitive modules."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    REFERENCE_STEPS,
    TWO_PROCESSES,
    assert_complete_run,
    once,
    payload_of,
    read_jsonl,
    train,
    unify,
)

KEPT_16BIT = ["lm_head", "mlp.down_proj", "self_attn.o_proj"]
BUILD = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from unifier.tiny import ensure_tiny_model, tiny_model_dir
ensure_tiny_model()
source, target, kept = str(tiny_model_dir()), sys.argv[1], sys.argv[2].split(",")
quantization = BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
    bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=kept,
)
model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization, dtype=torch.float32)
model.save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
"""


@pytest.fixture(scope="session")
def stored_4bit_model(tmp_path_factory) -> Path:
    """The tiny Qwen2 saved as a bitsandbytes 4-bit checkpoint (built with bitsandbytes' CPU kernels)."""

    def build(folder: Path) -> dict:
        target = folder / "tiny-qwen2-bnb-4bit"
        done = subprocess.run(
            [sys.executable, "-c", BUILD, str(target), ",".join(KEPT_16BIT)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return {"folder": str(target)}

    return Path(once(tmp_path_factory, "stored-4bit-model", build)["folder"])


def stored_recipe(tiny_recipe, model: Path, changes: dict | None = None, name: str = "stored.yaml") -> Path:
    base = {"model.name_or_path": str(model), "adapter.type": "qlora", "quantization.bits": 4}
    return tiny_recipe({**base, **(changes or {})}, name=name)


def plan_of(recipe: Path, backend: str) -> dict:
    result = unify("plan", str(recipe), "--backend", backend, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_stored_4bit_checkpoint_loads_as_stored_on_every_backend(tiny_recipe, stored_4bit_model):
    recipe = stored_recipe(tiny_recipe, stored_4bit_model)
    note = (
        f"pre-quantized 4-bit weights: {stored_4bit_model} (a bitsandbytes 4-bit checkpoint; nf4, double quant "
        "true; kept in 16-bit: lm_head, mlp.down_proj, self_attn.o_proj)"
    )
    for backend in ("peft", "swift", "unsloth"):
        plan = plan_of(recipe, backend)
        assert note in plan["notes"], (backend, plan["notes"])
        payload = payload_of(plan)
        if backend == "swift":  # no load-time quantization flags: ms-swift loads the checkpoint's own config
            assert not any(flag.startswith(("--quant", "--bnb_4bit")) for flag in payload["argv"])
            assert payload["argv"][payload["argv"].index("--model") + 1] == str(stored_4bit_model)
        elif backend == "peft":
            assert payload["quantization"] is None and payload["prequantized"] is True
            assert payload["model"] == str(stored_4bit_model)
        else:
            assert payload["model"] == str(stored_4bit_model)
    # the spec quantizes nothing twice: what contradicts the stored quantization is refused, named
    contradiction = stored_recipe(
        tiny_recipe, stored_4bit_model, {"quantization.double_quant": False}, "dq.yaml"
    )
    result = unify("validate", str(contradiction), "--backend", "peft")
    assert result.returncode == 2 and "quantization.double_quant is False but " in result.stderr, (
        result.stderr
    )
    assert "stored with True" in result.stderr
    sixteen = tiny_recipe({"model.name_or_path": str(stored_4bit_model)}, name="lora.yaml")
    result = unify("validate", str(sixteen), "--backend", "swift")
    assert (
        result.returncode == 2
        and "is stored in 4-bit (bitsandbytes): set quantization.bits: 4" in result.stderr
    )
    # sharding the stored 4-bit weights is refused; each process holding its own copy (ddp) is the way
    sharded = stored_recipe(
        tiny_recipe,
        stored_4bit_model,
        {"compute.nproc_per_node": 2, "training.per_device_batch_size": 2, "compute.strategy": "zero3"},
        "zero3.yaml",
    )
    for backend in ("peft", "swift"):
        result = unify("validate", str(sharded), "--backend", backend)
        assert (
            result.returncode == 2 and "cannot shard" in result.stderr and "use ddp or zero2" in result.stderr
        )


def test_the_dynamic_4bit_twin_is_what_every_backend_loads(tiny_recipe):
    hub = {
        "model.name_or_path": "Qwen/Qwen3-8B",
        "adapter.type": "qlora",
        "quantization.bits": 4,
        "quantization.double_quant": True,
        "compute.device": "cuda",
        "backend_options": {"swift": {"model_type": "qwen3"}},
    }
    twin = "unsloth/Qwen3-8B-unsloth-bnb-4bit"
    recipe = tiny_recipe(hub, name="twin.yaml")
    peft = payload_of(plan_of(recipe, "peft"))
    assert (
        peft["model"] == twin
        and peft["quantization"] is None
        and peft["prequantized_from"] == "Qwen/Qwen3-8B"
    )
    swift = payload_of(plan_of(recipe, "swift"))["argv"]
    assert swift[swift.index("--model") + 1] == twin and "--quant_method" not in swift
    assert swift[swift.index("--model_type") + 1] == "qwen3"
    # ms-swift does not register the twin's name and its architecture fits several model types: asked for
    unnamed = tiny_recipe({**hub, "backend_options": {}}, name="unnamed.yaml")
    result = unify("validate", str(unnamed), "--backend", "swift")
    assert result.returncode == 2 and "set backend_options.swift.model_type" in result.stderr, result.stderr
    # opting out quantizes the original at load time, on every backend alike
    written = tiny_recipe({**hub, "quantization.prequantized": False}, name="as-written.yaml")
    swift = payload_of(plan_of(written, "swift"))["argv"]
    assert swift[swift.index("--model") + 1] == "Qwen/Qwen3-8B" and "--quant_method" in swift
    assert payload_of(plan_of(written, "peft"))["quantization"]["load_in_4bit"] is True
    # a revision of the original is not one of its twin
    revised = tiny_recipe({**hub, "model.revision": "abc123"}, name="revised.yaml")
    result = unify("validate", str(revised), "--backend", "peft")
    assert result.returncode == 2 and "model.revision names a revision of Qwen/Qwen3-8B" in result.stderr


@pytest.mark.slow
def test_unsloth_on_one_process_and_swift_and_peft_on_two_train_the_same_stored_weights(
    tiny_recipe, stored_4bit_model
):
    """The same data and global batch (1 x 4 on unsloth, 2 x 2 on swift and peft, DDP over gloo)."""
    one = {"training.max_steps": REFERENCE_STEPS, "training.save_steps": 4, "output.probe": True}
    runs = {"unsloth": train(stored_recipe(tiny_recipe, stored_4bit_model, one, "one.yaml"), "unsloth")}
    for backend, port in (("peft", 29795), ("swift", 29797)):
        two = {**TWO_PROCESSES, "compute.master_port": port, "output.probe": True}
        runs[backend] = train(
            stored_recipe(tiny_recipe, stored_4bit_model, two, f"two-{backend}.yaml"), backend
        )
    losses = {}
    for backend, folder in runs.items():
        record = assert_complete_run(folder, backend, REFERENCE_STEPS)
        if backend != "unsloth":
            assert record["backend_details"]["rank_check"]["identical_weights"] is True
            assert record["backend_details"]["rank_check"]["ranks"] == 2
        losses[backend] = [row["loss"] for row in read_jsonl(folder / "metrics.jsonl")]
    assert losses["swift"] == pytest.approx(losses["unsloth"], rel=1e-5)
    assert losses["peft"] == pytest.approx(losses["unsloth"], rel=1e-5)
    probes = {b: json.loads((f / "probe" / "trainable.json").read_text()) for b, f in runs.items()}
    assert probes["swift"]["parameters"] == probes["peft"]["parameters"] == probes["unsloth"]["parameters"]
    for backend, probe in probes.items():
        quantized = probe["quantized_modules"]
        assert probe["quantized_modules"] == probes["unsloth"]["quantized_modules"], backend
        assert any(name.endswith("self_attn.q_proj") for name in quantized), (backend, quantized)
        for kept in KEPT_16BIT:  # the modules the checkpoint keeps in 16-bit stay so, on every backend
            assert not any(name.endswith(kept) for name in quantized), (backend, kept, quantized)
