"""The architecture's promises: one backend registry, one backend contract, closed plans, one run-folder owner."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from dataclasses import fields

import pytest
import tomllib
from unifier.backends import registry
from unifier.backends.base import SECTIONS, Backend
from unifier.backends.plan import CommandProgram, Plan, ScriptProgram

from unifier.core import plan
from unifier.spec import JobSpec, load_spec

from .conftest import ROOT, unify

BACKENDS = registry.active().names()


def test_the_registry_is_the_one_list_of_backends():
    names = list(BACKENDS)
    assert names == ["peft", "swift", "unsloth"]
    schema = JobSpec.model_json_schema()
    assert schema["properties"]["backend"]["enum"] == ["auto", *names]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for entry in registry.active().entries():
        assert entry.pip_extra in extras, f"{entry.name}: pyproject has no extra '{entry.pip_extra}'"
        assert entry.pip_extra in extras["all"][0].partition("[")[2].rstrip("]").split(",")
        assert entry.description and {"cpu", "cuda"} <= set(entry.auto_priority) <= {"cpu", "cuda", "several"}
    help_text = unify("run", "--help").stdout
    assert all(name in help_text for name in names)
    assert unify("compare", "--help").stdout.count(",".join(names)) == 1
    # the auto order is the registry's priority: peft first on CPU, unsloth first on a GPU
    assert (
        registry.active().auto_order("cpu")[0] == "peft"
        and registry.active().auto_order("cuda")[0] == "unsloth"
    )


DRIVER = """
import sys
from unifier.backends import registry
entries = registry.BUILTIN.entries() + [registry.BackendEntry(
    name="fourth", module="tests.fourth_backend", pip_extra="peft", description="the test-only fourth backend",
    auto_priority={"cpu": -1, "cuda": -1})]
with registry.using(registry.Registry(entries)):
    from unifier.cli import app
    try:
        app(sys.argv[1:])
    except SystemExit as exc:
        sys.exit(exc.code)
"""


def fourth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.slow
def test_a_fourth_backend_is_one_module_and_one_registry_entry(tiny_recipe, tmp_path):
    recipe = tiny_recipe(
        {"training.max_steps": 3, "backend_options": {"fourth": {"trainer_args": {"warmup_steps": 1}}}}
    )
    listed = fourth("backends")
    assert (
        listed.returncode == 0
        and "fourth" in listed.stdout
        and "the test-only fourth backend" in listed.stdout
    )
    assert "fourth" in fourth("run", "--help").stdout and "fourth" in fourth("compare", "--help").stdout
    validated = fourth("validate", str(recipe))
    assert validated.returncode == 0, validated.stderr
    assert "auto -> fourth" in validated.stdout  # its priority puts it first for backend: auto
    planned = fourth("plan", str(recipe), "--backend", "fourth", "--json")
    assert planned.returncode == 0, planned.stderr
    config = json.loads(planned.stdout)["program"]["config"]
    assert config["trainer_args"]["warmup_steps"] == 1  # backend_options.fourth reached it
    trained = fourth("run", str(recipe), "--backend", "fourth")
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "tiny-cpu-sft-fourth" / "run.json").read_text())
    assert record["status"] == "completed" and record["backend"] == "fourth"
    # and the built-in registry knows nothing of it
    refused = unify("validate", str(recipe))
    assert refused.returncode == 2 and "unknown backend 'fourth'" in refused.stderr


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_honours_the_contract(name, tiny_recipe):
    backend = registry.get_backend(name)
    assert isinstance(backend, Backend) and backend.name == name
    assert backend.description == registry.active().entry(name).description
    for section in SECTIONS:  # the same translator names in every backend
        assert callable(getattr(type(backend), f"translate_{section}"))
    assert list(inspect.signature(backend.run).parameters) == ["plan"]  # run(plan) takes nothing else
    assert "spec" not in {f.name for f in fields(Plan)}  # ... and a plan carries no spec to read
    spec = load_spec(tiny_recipe({"training.max_steps": 3}))
    problems = backend.check(spec, here=False)
    assert problems == [] and all(isinstance(p, str) for p in backend.check(spec))
    the_plan = plan(spec, name)
    assert isinstance(the_plan, Plan) and isinstance(the_plan.program, (ScriptProgram, CommandProgram))
    body = the_plan.to_json()
    assert json.loads(json.dumps(body)) == body and body["backend"] == name
    assert the_plan.render().strip()
    assert re.search(
        r"train\.(tokens|swift)\.jsonl", json.dumps(body)
    )  # the data it reads is named in the plan
    # translation is pure: the same spec gives the same plan, and nothing was written
    assert plan(spec, name).to_json() == body and not (spec_folder(spec, name)).exists()


def spec_folder(spec, name):
    from unifier.core import run_folder

    return run_folder(spec, name).root


def test_the_swift_plan_names_its_data_views_and_after_training_steps(tiny_recipe):
    spec = load_spec(
        tiny_recipe(
            {
                "data.train": [{"path": "builtin:tiny-preference"}],
                "training.method": "dpo",
                "output.save": "both",
                "compute.nproc_per_node": 2,
            }
        )
    )
    body = plan(spec, "swift").to_json()
    assert [view["path"].rsplit("/", 2)[-2:] for view in body["data_views"]] == [
        ["data", "train.swift.jsonl"]
    ]
    assert [step["kind"] for step in body["after_training"]] == [
        "collect_checkpoint",
        "merge_adapter",
        "check_ranks",
    ]
    assert "unifier_rank_check" in body["callbacks"]
    rendered = plan(spec, "swift").render()
    assert "train.swift.jsonl" in rendered and "then unifier merges adapter/" in rendered


def test_all_linear_is_one_list_from_the_model_on_every_backend(tiny_recipe, tiny_model_dir):
    from unifier.model_info import read_model_info
    from unifier.tiny import planned_config, planned_weight_shapes

    spec = load_spec(tiny_recipe())
    expected = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert read_model_info(str(tiny_model_dir)).linear_modules() == expected
    peft = plan(spec, "peft").program.config["lora"]["target_modules"]
    unsloth = plan(spec, "unsloth").program.config["lora"]["target_modules"]
    argv = list(plan(spec, "swift").program.argv)
    swift = argv[argv.index("--target_modules") + 1 : argv.index("--target_modules") + 1 + len(expected)]
    assert peft == unsloth == swift == expected
    assert "target_modules all-linear = down_proj" in plan(spec, "peft").render()
    # the tiny model's description before it is built is the built folder's, exactly
    built = read_model_info(str(tiny_model_dir))
    assert built.weight_shapes == planned_weight_shapes()
    assert {k: built.config[k] for k in planned_config() if k != "rope_theta"} == {
        k: v for k, v in planned_config().items() if k != "rope_theta"
    }


def test_a_model_with_fused_projections_gets_its_own_modules(tmp_path):
    """A Phi-3-style model (fused qkv_proj, gate_up_proj): all-linear must not mean a Llama module list."""
    import numpy as np
    from safetensors.numpy import save_file

    from unifier.model_info import read_model_info

    folder = tmp_path / "phi"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "phi3", "architectures": ["Phi3ForCausalLM"]})
    )
    tensors = {
        "model.embed_tokens.weight": np.zeros((8, 4), np.float32),
        "lm_head.weight": np.zeros((8, 4), np.float32),
        "model.layers.0.self_attn.qkv_proj.weight": np.zeros((12, 4), np.float32),
        "model.layers.0.self_attn.o_proj.weight": np.zeros((4, 4), np.float32),
        "model.layers.0.mlp.gate_up_proj.weight": np.zeros((16, 4), np.float32),
        "model.layers.0.mlp.down_proj.weight": np.zeros((4, 8), np.float32),
        "model.layers.0.input_layernorm.weight": np.zeros((4,), np.float32),
    }
    save_file(tensors, str(folder / "model.safetensors"))
    info = read_model_info(str(folder))
    assert info.linear_modules() == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert info.missing_targets(["q_proj", "qkv_proj", "self_attn.o_proj"]) == ["q_proj"]


def test_run_folder_paths_come_from_one_object():
    """No module joins run-folder path names itself: they all ask unifier.runfolder.RunFolder."""
    import re

    names = (
        "metrics.jsonl",
        "run.json",
        "train.jsonl",
        "eval.jsonl",
        "adapter",
        "merged",
        "checkpoints",
        "probe",
        "summary.json",
        "native",
        "data",
        "model",
        "loss.png",
        "ranks",
        "unifier_ranks",
    )
    joined = re.compile(r'(/\s*["\'](?P<a>[\w.]+)["\'])|(os\.path\.join\([^)]*["\'](?P<b>[\w.]+)["\'])')
    offenders = []
    for path in [*ROOT.joinpath("unifier").rglob("*.py"), *ROOT.joinpath("backends").glob("*.py")]:
        if path.name == "runfolder.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in joined.finditer(line):
                if (match["a"] or match["b"]) in names:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_importing_backends_from_the_repository_root_fails_clearly():
    result = subprocess.run(
        [sys.executable, "-c", "import backends"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode != 0 and "import unifier.backends instead" in result.stderr
