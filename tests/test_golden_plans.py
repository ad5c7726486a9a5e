"""The whole plan of representative recipes, on every backend, against a reviewed copy (tests/golden/plans.json).

The translation tests check the fields the backends disagree on; this one pins everything else a plan says
(every trainer argument, flag, environment variable, callback, data view and after-training step), so an
unintended change to any of them fails with a readable diff. After an intended change:

    UNIFIER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_plans.py   # then review the git diff
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from unifier.builtin import ASSETS, cache_root
from unifier.core import plan
from unifier.errors import UserError
from unifier.spec import spec_from_dict

from .conftest import ROOT, load_recipe

GOLDEN = ROOT / "tests" / "golden" / "plans.json"
RUN_DIR = "/runs/golden"
TEXT = ROOT / "examples" / "data" / "product_manual.jsonl"
CASES = {
    "lora-chat-cpu": {},
    "qlora-eval-no-periodic-checkpoints": {
        "adapter.type": "qlora",
        "quantization.bits": 4,
        "quantization.double_quant": True,
        "data.eval_split": 0.1,
        "training.eval_steps": 5,
        "training.save_steps": None,
        "training.save_total_limit": None,
    },
    "8bit-bf16-cuda": {
        "adapter.type": "qlora",
        "quantization.bits": 8,
        "model.dtype": "bfloat16",
        "compute.device": "cuda",
    },
    "dpo-rslora-dora": {
        "training.method": "dpo",
        "data.train": [{"path": "builtin:tiny-preference"}],
        "adapter.use_rslora": True,
        "adapter.use_dora": True,
        "adapter.modules_to_save": ["lm_head"],
        "training.dpo.beta": 0.2,
    },
    "orpo": {
        "training.method": "orpo",
        "data.train": [{"path": "builtin:tiny-preference"}],
        "training.orpo.beta": 0.25,
    },
    "simpo-cuda": {
        "training.method": "simpo",
        "data.train": [{"path": "builtin:tiny-preference"}],
        "training.simpo.gamma": 0.8,
        "training.simpo.nll_weight": 0.3,
        "compute.device": "cuda",
        "model.dtype": "bfloat16",
    },
    "reward-model": {
        "training.method": "reward",
        "data.train": [{"path": "builtin:tiny-preference"}],
        "training.reward.center_coefficient": 0.01,
    },
    "grpo-own-reward": {
        "training.method": "grpo",
        "data.train": [{"path": "builtin:tiny-prompts"}],
        "training.grpo": {"rewards": ["exact_answer", "format"], "reward_weights": [1.0, 0.5], "beta": 0.04},
        "training.per_device_batch_size": 8,
    },
    "full-text-checkpointing": {
        "adapter.type": "full",
        "data.train": [{"path": str(TEXT), "format": "text"}],
        "training.gradient_checkpointing": True,
        "output.save": "both",
    },
    "two-epochs-packed-cuda": {
        "training.max_steps": None,
        "training.epochs": 2.5,
        "data.packing": True,
        "compute.device": "cuda",
        "model.dtype": "bfloat16",
        "output.probe": True,
    },
    "zero2-two-nodes": {
        "compute.device": "cuda",
        "compute.nproc_per_node": 4,
        "compute.nnodes": 2,
        "compute.node_rank": 1,
        "compute.strategy": "zero2",
        "compute.master_addr": "10.0.0.1",
        "model.dtype": "bfloat16",
        "output.save": "merged",
    },
}


def spec_for(changes: dict):
    raw = load_recipe()
    raw["output"]["dir"] = RUN_DIR
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return spec_from_dict(raw)


def normalized(value):
    """Machine-specific paths -> placeholders, so the golden file is the same on every machine."""
    import unifier.backends

    text = json.dumps(value, sort_keys=True)
    backends = Path(unifier.backends.__file__).parent  # through a symlink in a mutation-testing copy
    for path, name in (
        (str(backends), "<backends>"),
        (str(ROOT / "backends"), "<backends>"),
        (str(ASSETS), "<assets>"),
        (str(cache_root()), "<cache>"),
        (str(ROOT), "<repo>"),
    ):
        text = text.replace(path, name)
    return json.loads(text)


def current() -> dict:
    plans = {}
    for name, changes in CASES.items():
        spec = spec_for(changes)
        for backend in ("peft", "swift", "unsloth"):
            try:
                body = plan(spec, backend).to_json()
            except UserError as exc:
                body = {"refused": str(exc)}
            plans[f"{name} / {backend}"] = normalized(body)
    return plans


@pytest.mark.skipif(not os.environ.get("UNIFIER_UPDATE_GOLDEN"), reason="writes the golden file")
def test_update_the_golden_plans():
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize(
    "case", [f"{name} / {backend}" for name in CASES for backend in ("peft", "swift", "unsloth")]
)
def test_plans_are_the_reviewed_ones(case, _plans):
    golden = json.loads(GOLDEN.read_text())
    assert case in golden, "new case: run with UNIFIER_UPDATE_GOLDEN=1 and review the diff"
    assert _plans[case] == golden[case], (
        f"{case}: the plan changed; if intended, UNIFIER_UPDATE_GOLDEN=1 and review"
    )


@pytest.fixture(scope="module")
def _plans():
    return current()


def test_the_golden_file_has_no_machine_paths():
    text = GOLDEN.read_text()
    assert str(ROOT) not in text and str(Path.home()) + "/" not in text.replace("<", "")
