"""The unsloth backend plans its GPU path honestly (its CPU-path trainings are the shared scenarios of
tests/test_backend_scenarios.py)."""

from unifier.core import get_backend, plan_context, run_folder
from unifier.spec.loading import load_spec

from .conftest import (
    unify,
)


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
    assert (
        "# pre-quantized 4-bit weights: unsloth/Qwen3-8B-unsloth-bnb-4bit (unsloth's dynamic 4-bit twin of "
        "Qwen/Qwen3-8B" in result.stdout
    )
    assert (
        "'model': 'unsloth/Qwen3-8B-unsloth-bnb-4bit'" in result.stdout
        or '"model": "unsloth/Qwen3-8B-unsloth-bnb-4bit"' in result.stdout
    )
    # the spec opts out: the name is loaded as written and quantized on the fly
    spec = load_spec(recipe, ["quantization.prequantized=false"])
    assert context(spec).weights_location == "Qwen/Qwen3-8B" and context(spec).prequantized is None
    # a 16-bit LoRA run never swaps the model
    spec = load_spec(tiny_recipe({"model.name_or_path": "Qwen/Qwen3-8B"}, name="lora.yaml"))
    assert context(spec).weights_location == "Qwen/Qwen3-8B" and context(spec).prequantized is None


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
