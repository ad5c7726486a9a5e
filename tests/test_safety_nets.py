"""Each safety net, shown to catch what it is for (a net that never fails is not tested)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unifier.core import choose_backend, plan
from unifier.spec import load_spec

from .conftest import RECIPES, ROOT, unify


def test_the_rank_digest_tells_two_models_apart_by_one_weight():
    import torch
    from unifier.backends.probe import trainable_digest

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    b.load_state_dict(a.state_dict())
    assert trainable_digest(a) == trainable_digest(b)
    with torch.no_grad():
        b[1].weight[0, 0] += 1e-6
    assert trainable_digest(a) != trainable_digest(b)
    b[1].weight.requires_grad_(False)  # frozen weights are not the ranks' training state
    a[1].weight.requires_grad_(False)
    assert trainable_digest(a) == trainable_digest(b)


@pytest.mark.parametrize(
    "world, cuda, expected",
    [(1, False, "peft"), (1, True, "unsloth"), (2, False, "swift"), (2, True, "swift")],
)
def test_auto_picks_by_device_and_process_count(tiny_recipe, monkeypatch, world, cuda, expected):
    """backend: auto follows the registry's priorities: peft on CPU, unsloth on one GPU, swift for several
    processes (CUDA faked where the machine is probed, so every check sees it)."""
    monkeypatch.setattr("unifier.environment.cuda_visible", lambda: cuda)
    monkeypatch.setattr("unifier.backends.base.cuda_visible", lambda: cuda)
    spec = load_spec(tiny_recipe({"compute.device": "auto", "compute.nproc_per_node": world}))
    assert choose_backend(spec, "auto", here=True).name == expected


def test_tool_calls_carry_loss_exactly_where_the_template_marks_them(tiny_model_dir):
    """ChatML with tools: loss on each assistant turn's content, its <|im_end|> and newline, and the
    <tool_call> block; never on the system/tools header, the user turn or the tool result."""
    from unifier.data.encode import Encoder, Vocabulary
    from unifier.data.tokens import resolve_template

    vocabulary = Vocabulary.from_folder(Path(tiny_model_dir))
    encoder = Encoder(vocabulary, resolve_template("chatml", vocabulary, "tiny"), max_len=1024)
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
            ],
        },
        {"role": "tool", "name": "weather", "content": "-3C"},
        {"role": "assistant", "content": "It is -3C in Oslo."},
    ]
    ids, mask, _ = encoder.chat(messages, tools)
    decode = vocabulary.tokenizer.decode
    trained, spans, current = [], [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    trained = [decode(span, skip_special_tokens=False) for span in spans]
    assert trained == [
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n',
        "It is -3C in Oslo.<|im_end|>\n",
    ]
    untrained = decode([t for t, f in zip(ids, mask) if not f], skip_special_tokens=False)
    assert "<tools>" in untrained and "-3C" in untrained and "Weather in Oslo?" in untrained


def test_plan_needs_none_of_the_backends_packages(tiny_recipe):
    """Hide torch, transformers, peft, trl, datasets, ms-swift and unsloth from the process: every backend still
    plans (a recipe for a bigger machine plans on a laptop)."""
    hide = (
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "swift",
        "unsloth",
        "unsloth_zoo",
        "bitsandbytes",
    )
    driver = f"""
import importlib.abc, sys
class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {hide!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hidden())
from unifier.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    sys.exit(exc.code)
"""
    recipe = str(tiny_recipe())
    for backend in ("peft", "swift", "unsloth"):
        result = subprocess.run(
            [sys.executable, "-c", driver, "plan", recipe, "--backend", backend],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (backend, result.stderr[-2000:])
        assert "--lora_rank 8" in result.stdout or "'r': 8" in result.stdout, backend
    qwen = subprocess.run(
        [
            sys.executable,
            "-c",
            driver,
            "plan",
            str(RECIPES / "qwen3-8b-lora-zero2-8gpu.yaml"),
            "--backend",
            "swift",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert qwen.returncode == 0 and "NPROC_PER_NODE=8" in qwen.stdout, qwen.stderr[-2000:]


def test_a_local_model_folder_gets_its_swift_model_type_from_config_json(
    tiny_model_dir, tiny_recipe, tmp_path
):
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    spec = load_spec(tiny_recipe({"model.name_or_path": str(folder)}))
    argv = list(plan(spec, "swift").program.argv)
    assert argv[argv.index("--model") + 1] == str(folder) and argv[argv.index("--model_type") + 1] == "qwen2"
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    argv = list(
        plan(
            load_spec(tiny_recipe({"model.name_or_path": str(folder)}, name="llama.yaml")), "swift"
        ).program.argv
    )
    assert argv[argv.index("--model_type") + 1] == "llama"
    config["model_type"] = "frobnicator"
    (folder / "config.json").write_text(json.dumps(config))
    result = unify(
        "plan", str(tiny_recipe({"model.name_or_path": str(folder)}, name="odd.yaml")), "-b", "swift"
    )
    assert result.returncode == 2 and "model_type 'frobnicator'" in result.stderr


def test_refusals_the_readme_promises(tiny_recipe):
    zero = unify("validate", str(RECIPES / "qwen3-8b-lora-zero2-8gpu.yaml"), "-b", "swift")
    assert zero.returncode == 0 and "not runnable on this machine: compute.device is 'cuda'" in zero.stdout
    for backend in (
        "swift",
        "peft",
    ):  # ZeRO on CPU runs over gloo with several processes (tests/test_scale_out)
        on_cpu = unify(
            "validate", str(tiny_recipe({"compute.nproc_per_node": 2, "compute.strategy": "zero2"}))
        )
        assert on_cpu.returncode == 0, on_cpu.stderr
        one = unify(
            "validate",
            str(tiny_recipe({"compute.strategy": "zero3_offload"}, name="one.yaml")),
            "-b",
            backend,
        )
        assert one.returncode == 2 and "on CPU needs several processes" in one.stderr, one.stderr
    dora = unify("validate", str(tiny_recipe({"adapter.use_dora": True}, name="dora.yaml")), "-b", "unsloth")
    assert dora.returncode == 2 and "adapter.use_dora is not supported by unsloth" in dora.stderr


STRATEGIES = ("ddp", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2")


@pytest.mark.parametrize("processes", [1, 2])
def test_every_strategy_acts_on_every_backend_or_is_refused(tiny_recipe, processes):
    """compute.strategy x backend x process count: a strategy either reaches the native program (ms-swift's
    --deepspeed / --fsdp) or the backend can never run the spec (check(here=False), what validate and run
    refuse). Nothing is accepted and dropped: ZeRO on peft, or ZeRO-2 on one process, were."""
    from unifier.backends import all_backends

    for strategy in STRATEGIES:
        changes = {
            "compute.strategy": strategy,
            "compute.device": "cuda",
            "compute.nproc_per_node": processes,
        }
        spec = load_spec(tiny_recipe(changes, name=f"{strategy}-{processes}.yaml"))
        for backend in all_backends():
            problems = backend.check(spec, here=False)
            if strategy == "ddp" and (processes == 1 or backend.name in ("swift", "peft")):
                assert not problems, (strategy, backend.name, problems)
                continue
            if problems:
                assert any("compute" in p for p in problems), (strategy, backend.name, problems)
                continue
            assert backend.name in ("swift", "peft"), (strategy, processes, backend.name, "accepted")
            assert processes == 2 or strategy.endswith("_offload")
            if backend.name == "swift":
                argv = list(plan(spec, "swift").program.argv)
                flag = "--fsdp" if strategy == "fsdp2" else "--deepspeed"
                assert argv[argv.index(flag) + 1] == strategy, (strategy, processes, argv)
                continue
            args = plan(spec, "peft").program.config["trainer_args"]
            if strategy == "fsdp2":  # ms-swift's preset, passed to the Trainer
                assert args["fsdp"] == "full_shard auto_wrap" and args["fsdp_config"]["fsdp_version"] == 2
                assert args["gradient_checkpointing"] is False  # FSDP2's activation checkpointing instead
            else:
                zero = args["deepspeed"]["zero_optimization"]
                assert zero["stage"] == (3 if strategy.startswith("zero3") else 2), (strategy, zero)
                offload = "cpu" if strategy.endswith("_offload") else "none"
                assert zero["offload_optimizer"]["device"] == offload, (strategy, zero)


def test_a_strategy_a_backend_cannot_run_is_refused_by_validate_and_run(tiny_recipe):
    offload = tiny_recipe({"compute.strategy": "zero3_offload"}, name="offload.yaml")
    for command in (["validate", str(offload), "-b", "unsloth"], ["run", str(offload), "-b", "unsloth"]):
        result = unify(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "compute.strategy 'zero3_offload' is not supported by unsloth" in result.stderr
    for backend in ("peft", "swift"):  # ZeRO-Offload on one CPU process: nothing to partition, refused
        result = unify("run", str(offload), "-b", backend)
        assert result.returncode == 2 and "on CPU needs several processes" in result.stderr, result.stderr[
            -2000:
        ]
    auto = unify("validate", str(offload))  # backend auto skips what cannot run it
    assert auto.returncode == 2 and "on CPU needs several processes" in auto.stderr, auto.stdout + auto.stderr
    one = unify("validate", str(tiny_recipe({"compute.strategy": "zero2"}, name="zero2.yaml")), "-b", "swift")
    assert one.returncode == 2 and "changes nothing with one process" in one.stderr, one.stderr


def test_import_order_of_the_printed_scripts():
    """The printed programs import nothing of unifier (the inlined library replaces the one import)."""
    for program in ("peft_program.py", "unsloth_program.py"):
        lines = (ROOT / "backends" / program).read_text().splitlines()
        imports = [line for line in lines if line.startswith(("import", "from")) and "unifier" in line]
        assert imports == ["from unifier.backends.inline_library import *  # unifier:inline"], program


def test_final_weights_are_judged_against_the_training_update(tmp_path):
    """A few elements moved by ~lr (AdamW's sign flip on a near-zero gradient) pass; a real difference fails."""
    import torch
    from safetensors.torch import save_file

    from unifier.compare import FINAL_UPDATE_RTOL, update_relative_difference
    from unifier.runfolder import RunFolder

    initial = {"layer.lora_A.default.weight": torch.zeros(64, 64)}
    reference = {"layer.lora_A.weight": torch.full((64, 64), 0.03)}
    few_flipped = reference["layer.lora_A.weight"].clone()
    few_flipped.view(-1)[:10] -= 0.004
    everywhere = reference["layer.lora_A.weight"] * 0.9

    def folder(name, weights, probe=None):
        run = RunFolder(tmp_path / name)
        run.adapter.mkdir(parents=True)
        save_file(weights, str(run.adapter / "adapter_model.safetensors"))
        if probe is not None:
            run.probe.mkdir(parents=True)
            save_file(probe, str(run.probe / "initial_trainable.safetensors"))
        return run

    ref = folder("ref", reference, probe=initial)
    flipped = update_relative_difference(ref, folder("flipped", {"layer.lora_A.weight": few_flipped}))
    assert 0 < flipped < FINAL_UPDATE_RTOL
    assert update_relative_difference(
        ref, folder("off", {"layer.lora_A.weight": everywhere})
    ) == pytest.approx(0.1)
    assert update_relative_difference(folder("no_probe", reference), ref) is None


def test_a_resumed_run_steps_at_its_new_schedules_learning_rate():
    """transformers restores the optimizer's saved learning rate (0 at the end of a linear schedule) and applies
    a rebuilt schedule only after the first resumed step; ResumedScheduleCallback sets the schedule's rate for
    that step, and leaves an unchanged schedule's rate exactly as it was (bit-exact resume)."""
    import torch
    from transformers import get_linear_schedule_with_warmup
    from unifier.backends.hf_callbacks import ResumedScheduleCallback

    def trained(total: int, steps: int):
        weight = torch.nn.Parameter(torch.ones(2))
        optimizer = torch.optim.AdamW([weight], lr=1e-3)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
        return optimizer, scheduler

    old_optimizer, old_scheduler = trained(total=3, steps=3)
    assert old_optimizer.param_groups[0]["lr"] == 0.0  # the end of the old schedule
    optimizer, scheduler = trained(total=5, steps=0)  # the resumed trainer's, built for max_steps 5
    optimizer.load_state_dict(old_optimizer.state_dict())
    scheduler.load_state_dict(old_scheduler.state_dict())
    assert optimizer.param_groups[0]["lr"] == 0.0  # what transformers would step with
    state = type("State", (), {"global_step": 3})()
    ResumedScheduleCallback().on_train_begin(None, state, None, optimizer=optimizer, lr_scheduler=scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 2 / 5)  # step 4 of 5
    same_optimizer, same_scheduler = trained(total=5, steps=2)
    before = same_optimizer.param_groups[0]["lr"]
    ResumedScheduleCallback().on_train_begin(
        None,
        type("State", (), {"global_step": 2})(),
        None,
        optimizer=same_optimizer,
        lr_scheduler=same_scheduler,
    )
    assert same_optimizer.param_groups[0]["lr"] == before


def test_zero_without_the_deepspeed_package_names_the_extra(tiny_recipe, monkeypatch):
    """The development set-up has deepspeed; a machine without it is told which extra to install."""
    from unifier.backends import base

    spec = load_spec(
        tiny_recipe({"compute.nproc_per_node": 2, "compute.strategy": "zero2"}, name="nods.yaml")
    )
    assert base.deepspeed_problems(spec, here=True) == []
    monkeypatch.setattr(base, "missing_packages", lambda names: list(names))
    assert base.deepspeed_problems(spec, here=True) == [
        "compute.strategy 'zero2' needs the deepspeed package (pip install 'unifier[gpu]')"
    ]
