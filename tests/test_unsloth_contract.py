"""Contract between the unsloth adapter and the installed unsloth source, checked without a GPU.

unsloth's GPU path (unsloth.models.loader / unsloth.models.llama) and its CPU path (unsloth._cpu)
accept different keywords, and both end in **kwargs that would swallow a misspelt one silently.
`UNSLOTH_ALLOW_CPU=1` imports the GPU-path classes on a CPU machine so their real signatures can be
read. Every keyword the adapter passes must be a named parameter of both paths, and the unsloth
defaults the adapter overrides must still be what the adapter assumes.
"""

import importlib.metadata
import json
import subprocess
import sys

import pytest
from unifier.backends.unsloth import CONTRACT_VERSIONS

from unifier.core import get_backend, plan
from unifier.spec.loading import load_spec

INSPECT = """
import ast, inspect, json, os, sys, textwrap
import unsloth
from unsloth import FastLanguageModel

def described(function):
    out = {}
    for name, p in inspect.signature(function).parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[name] = repr(p.default) if p.default is not inspect.Parameter.empty else "<required>"
    return out

def discarded(function):
    # keywords the function drops on purpose: `for key in ("a", "b"): kwargs.pop(key, None)`
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return sorted(c.value for loop in ast.walk(tree) if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Tuple)
                  for c in loop.iter.elts if isinstance(c, ast.Constant) and isinstance(c.value, str))

json.dump({"module": FastLanguageModel.__module__,
           "discarded_by_from_pretrained": discarded(FastLanguageModel.from_pretrained),
           "from_pretrained": described(FastLanguageModel.from_pretrained),
           "get_peft_model": described(FastLanguageModel.get_peft_model)}, sys.stdout)
"""


def signatures(tmp_path_factory, gpu_path: bool) -> dict:
    env = {"UNSLOTH_COMPILE_LOCATION": str(tmp_path_factory.mktemp("unsloth_cache")), "HF_HUB_OFFLINE": "1"}
    if gpu_path:
        env["UNSLOTH_ALLOW_CPU"] = "1"
    import os

    result = subprocess.run(
        [sys.executable, "-c", INSPECT],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gpu_signatures(tmp_path_factory):
    return signatures(tmp_path_factory, gpu_path=True)


@pytest.fixture(scope="module")
def cpu_signatures(tmp_path_factory):
    return signatures(tmp_path_factory, gpu_path=False)


def planned_configs(tiny_recipe) -> dict[str, dict]:
    variants = {
        "lora": {},
        "qlora": {"adapter.type": "qlora", "quantization.bits": 4, "quantization.double_quant": True},
        "full": {"adapter.type": "full"},
        "rslora-gc": {"adapter.use_rslora": True, "training.gradient_checkpointing": True},
    }
    configs = {}
    for label, changes in variants.items():
        spec = load_spec(tiny_recipe(changes, name=f"{label}.yaml"))
        assert get_backend("unsloth").check(spec) == [], label
        configs[label] = plan(spec, "unsloth", run_dir="/tmp/run").program.config
    return configs


def test_installed_versions_are_the_contract_versions():
    installed = {name: importlib.metadata.version(name) for name in CONTRACT_VERSIONS}
    assert installed == CONTRACT_VERSIONS, (
        "unsloth changed: re-read its from_pretrained/get_peft_model signatures, then update CONTRACT_VERSIONS"
    )


def test_gpu_path_classes_are_the_ones_inspected(gpu_signatures, cpu_signatures):
    assert gpu_signatures["module"] == "unsloth.models.loader"
    assert cpu_signatures["module"].startswith("unsloth._cpu")


@pytest.mark.parametrize("path", ["gpu", "cpu"])
def test_every_keyword_is_a_named_parameter(path, gpu_signatures, cpu_signatures, tiny_recipe):
    named = gpu_signatures if path == "gpu" else cpu_signatures
    for label, config in planned_configs(tiny_recipe).items():
        # the CPU loader drops GPU-only keywords (use_exact_model_name...) on purpose; anything else must be named
        accepted = set(named["from_pretrained"]) | (
            set(named["discarded_by_from_pretrained"]) if path == "cpu" else set()
        )
        unknown = set(config["from_pretrained"]) - accepted
        assert not unknown, (
            f"{label}: from_pretrained keywords swallowed by **kwargs on the {path} path: {unknown}"
        )
        assert "model_name" in named["from_pretrained"]
        if config["lora"] is not None:
            unknown = set(config["lora"]) - set(named["get_peft_model"])
            assert not unknown, (
                f"{label}: get_peft_model keywords swallowed by **kwargs on the {path} path: {unknown}"
            )


def test_unsloth_defaults_the_adapter_overrides(gpu_signatures, tiny_recipe):
    """The reason each value is passed explicitly: these defaults differ from the spec's."""
    fp, peft = gpu_signatures["from_pretrained"], gpu_signatures["get_peft_model"]
    assert fp["load_in_4bit"] == "True" and fp["use_gradient_checkpointing"] == "'unsloth'"
    assert fp["use_exact_model_name"] == "False"
    assert peft["lora_alpha"] == "16" and peft["random_state"] == "3407" and peft["r"] == "16"
    assert peft["use_gradient_checkpointing"] == "'unsloth'"
    config = planned_configs(tiny_recipe)["lora"]
    assert (
        config["from_pretrained"]["load_in_4bit"] is False
        and config["from_pretrained"]["use_exact_model_name"] is True
    )
    assert (
        config["lora"]["lora_alpha"] == 16
        and config["lora"]["r"] == 8
        and config["lora"]["random_state"] == 42
    )
    assert config["lora"]["use_gradient_checkpointing"] is False
