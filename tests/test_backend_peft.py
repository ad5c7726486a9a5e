"""The peft backend (transformers + peft + trl): what only it trains (DoRA + rsLoRA, packing). LoRA, QLoRA, full,
DPO and raw text are the shared scenarios of tests/test_backend_scenarios.py."""

import itertools
import json

import pytest

from .conftest import (
    assert_complete_run,
    merged_matches_adapter,
    payload_of,
    read_jsonl,
    train,
)

pytestmark = pytest.mark.slow


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
