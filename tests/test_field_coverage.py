"""Every leaf field of the JobSpec reaches every backend's plan, is refused by its check(), or is listed here.

For each leaf field and each value it can take other than the base recipe's (every choice of a Literal,
the other bool, a nudged number...), the plan of each registered backend must change, or that backend's
check() must refuse the changed spec with a message. A field that reaches no plan on purpose is listed in
NOT_IN_PLAN with the reason. A new spec field that reaches no backend fails here.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel
from unifier.backends.registry import active

from unifier.core import plan
from unifier.errors import UserError
from unifier.spec import JobSpec, spec_from_dict

from .conftest import load_recipe

# field -> reason it never reaches a plan (for every backend, or for the backends named after the colon)
NOT_IN_PLAN = {
    "name": "only fills {name} in output.dir (tested through output.dir)",
    "backend": "chooses the backend (backends/registry.py), it is not translated",
    "output.if_exists": "decides what happens to an existing run folder before planning (unifier/runfolder.py)",
    "data.shuffle": "unifier shuffles the rows when it writes data/train.jsonl; every backend reads the file in order",
    **{
        f"data.{split}[0].{key}": "read by unifier's data normalization before planning (unifier/data)"
        for split in ("train", "eval")
        for key in ("path", "format", "split", "subset", "columns", "roles", "max_rows", "extra_columns")
    },
    "data.empty_content": "read by unifier's data normalization before planning (unifier/data)",
    **{
        key: "applied by unifier's encoder when it writes data/*.tokens.jsonl, the tokens every backend trains "
        "(tests/test_encode.py shows it changes them)"
        for key in ("model.chat_template", "data.assistant_only_loss")
    },
    **{
        f"eval.{key}": "read by unifier after training (unifier/running.py runs unifier/evaluation.py)"
        for key in ("after_training", "retain", "max_retain_increase", "samples")
    },
}
# base recipes that make a field matter (a DPO beta changes nothing in an SFT job)
QLORA = {"adapter.type": "qlora", "quantization.bits": 4, "quantization.double_quant": True}
CONTEXTS = {
    "quantization.": QLORA,
    **{
        f"training.{method}.": {
            "training.method": method,
            "data.train": [{"path": "builtin:tiny-preference"}],
        }
        for method in ("dpo", "orpo", "simpo", "reward")
    },
    "training.kto.": {
        "training.method": "kto",
        "data.train": [{"path": "builtin:tiny-kto"}],
        "training.per_device_batch_size": 2,
    },
    "training.grpo.": {
        "training.method": "grpo",
        "data.train": [{"path": "builtin:tiny-prompts"}],
        "training.grpo": {"rewards": ["exact_answer"]},
        "training.per_device_batch_size": 8,
    },
    "training.eval_steps": {"data.eval_split": 0.1},
    "training.min_lr_ratio": {"training.lr_scheduler": "cosine"},
    "compute.": {"compute.nproc_per_node": 2},
    "compute.node_rank": {"compute.nproc_per_node": 2, "compute.nnodes": 2},
    "quantization.prequantized": {
        **QLORA,
        "model.name_or_path": "Qwen/Qwen3-8B",
        "compute.device": "cuda",
        "backend_options": {"swift": {"model_type": "qwen3"}},  # ms-swift does not register the twin's name
    },
}
# values for fields whose type gives no obvious alternative
VALUES = {
    "name": ["another-name"],
    "model.name_or_path": ["Qwen/Qwen3-8B"],
    "model.revision": ["v1.0"],
    "model.chat_template": ["tokenizer"],
    "output.report_to": [["tensorboard"]],
    "adapter.target_modules": [["q_proj", "v_proj"]],
    "adapter.modules_to_save": [["lm_head"]],
    "output.dir": ["elsewhere/{name}"],
    "compute.master_addr": ["10.1.2.3"],
    "data.train[0].path": ["builtin:tiny-preference"],
    "data.train[0].split": ["test"],
    "data.train[0].subset": ["default"],
    "data.train[0].columns": [{"text": "body"}],
    "data.train[0].roles": [{"bot": "assistant"}],
    "quantization.compute_dtype": ["bfloat16"],
    "training.max_steps": [7],
    "training.method": ["dpo", "orpo", "simpo", "reward", "grpo"],
    "training.grpo.rewards": [["format"], ["exact_answer", "length"]],
    "training.grpo.reward_weights": [[2.0]],
    "training.grpo.num_generations": [2, 8],  # refused on the base recipe's chat rows (they need pairs)
    "training.save_steps": [5, None],
    "training.eval_steps": [3],
    "data.eval_split": [0.1],
    "data.seed": [7],
    "training.seed": [7],
    "compute.nnodes": [2],
    "compute.device": ["cuda"],  # 'auto' is this machine's device: on a CPU machine the same plan as 'cpu'
    "compute.node_rank": [1],
}


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    leaves = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        variants = _model_variants(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves += leaf_fields(annotation, path + ".")
        elif (
            variants
        ):  # a discriminated union (training: one section per method): every variant's fields once
            seen = {}
            for variant in variants:
                for leaf, leaf_info in leaf_fields(variant, path + "."):
                    seen.setdefault(leaf, leaf_info)
            leaves += list(seen.items())
        elif get_origin(annotation) is list and _model_arg(annotation):
            leaves += leaf_fields(_model_arg(annotation), path + "[0].")
        else:
            leaves.append((path, info))
    return leaves


def _model_variants(annotation) -> list[type[BaseModel]]:
    if get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    variants = [
        get_args(arg)[0] if get_origin(arg) is typing.Annotated else arg for arg in get_args(annotation)
    ]
    return variants if all(isinstance(v, type) and issubclass(v, BaseModel) for v in variants) else []


def _model_arg(annotation):
    args = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return args[0] if args else None


def alternatives(path: str, info, current: Any) -> list[Any]:
    """Values other than `current` that the field accepts."""
    if path in VALUES:
        return [v for v in VALUES[path] if v != current]
    annotation = info.annotation
    choices: list[Any] = []
    for option in _flatten(annotation):
        if get_origin(option) is Literal:
            choices += list(get_args(option))
        elif option is bool:
            choices += [True, False]
        elif option is int:
            choices.append((current or 1) + 1)
        elif option is float:
            choices.append((current or 0.1) / 2)
        elif option is type(None):
            choices.append(None)
    values = [c for c in choices if c != current or type(c) is not type(current)]
    assert values, f"{path}: no alternative value known; add one to VALUES"
    return values


def _flatten(annotation) -> list:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [item for arg in get_args(annotation) for item in _flatten(arg)]
    return [annotation]


def set_path(raw: dict, path: str, value: Any) -> None:
    node = raw
    parts = path.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value


def get_path(raw: dict, path: str) -> Any:
    node: Any = raw
    for part in path.replace("[0]", ".0").split("."):
        if part.isdigit():
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def base_recipe(path: str) -> dict:
    raw = load_recipe()
    raw["output"]["dir"] = "/tmp/unifier-field-coverage/{name}-{backend}"
    context = {}
    for prefix, changes in CONTEXTS.items():
        if path.startswith(prefix):
            context = changes  # the longest matching prefix wins (CONTEXTS is ordered short to long)
    for dotted, value in context.items():
        set_path(raw, dotted, copy.deepcopy(value))
    return raw


def outcome(raw: dict, backend: str) -> tuple[str, Any]:
    """('refused', message) or ('plan', the plan's JSON)."""
    try:
        spec = spec_from_dict(copy.deepcopy(raw))
    except UserError as exc:
        return "invalid", str(exc)
    try:
        return "plan", plan(spec, backend).to_json()
    except UserError as exc:
        return "refused", str(exc)


def exempt(path: str, backend: str) -> bool:
    for key in NOT_IN_PLAN:
        field, _, backends = key.partition(":")
        if field == path and (not backends or backend in backends.split(",")):
            return True
    return False


LEAVES = [path for path, _ in leaf_fields(JobSpec) if path != "backend_options"]


def test_the_leaf_list_is_complete():
    assert {
        "model.name_or_path",
        "adapter.r",
        "quantization.bits",
        "data.packing",
        "training.learning_rate",
        "training.dpo.beta",
        "compute.strategy",
        "output.save",
        "data.train[0].path",
    } <= set(LEAVES)
    assert not [key for key in NOT_IN_PLAN if key.partition(":")[0] not in LEAVES], (
        "NOT_IN_PLAN names a field that is gone"
    )


@pytest.mark.parametrize("path", LEAVES)
def test_every_field_reaches_every_backend_or_is_refused(path):
    fields = dict(leaf_fields(JobSpec))
    raw = base_recipe(path)
    current = get_path(raw, path)
    if current is None and path not in VALUES:
        current = fields[path].default
    silent = []
    tried = 0
    for backend in active().names():
        if exempt(path, backend):
            continue
        base_kind, base = outcome(raw, backend)
        assert base_kind != "invalid", f"{path}: the base recipe is invalid: {base}"
        for value in alternatives(path, fields[path], current):
            changed = copy.deepcopy(raw)
            set_path(changed, path, value)
            kind, result = outcome(changed, backend)
            if kind == "invalid":
                continue  # the schema refuses the value itself (e.g. node_rank >= nnodes): nothing reaches a plan
            tried += 1
            if kind == "refused" or base_kind == "refused":
                assert kind == "refused" or result != base, (path, backend, value)
                continue
            if result == base:
                silent.append(f"{backend}: {path}={value!r}")
    assert not silent, (
        "these changes reach no plan and no check (translate them, refuse them, or list the field in "
        f"NOT_IN_PLAN with the reason): {silent}"
    )
    assert tried or all(exempt(path, b) for b in active().names()), f"{path}: no alternative value was valid"
