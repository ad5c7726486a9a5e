"""The ms-swift backend runs real `swift sft` / `swift rlhf` jobs on the tiny model (CPU, offline)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from unifier.backends.after_training import verify_ranks
from unifier.backends.plan import CheckRanks

from .conftest import (
    REFERENCE_STEPS,
    adapter_changes_output,
    assert_complete_run,
    load_recipe,
    merged_matches_adapter,
    payload_of,
    preference_margin,
    quantized_adapter_effect,
    read_jsonl,
    train,
    unify,
    write_recipe,
)

pytestmark = pytest.mark.slow


def losses(rows: list[dict]) -> list[float]:
    return [row["loss"] for row in rows if row.get("loss") is not None]


def test_lora_run_and_the_printed_command_reproduces_it(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe({"training.max_steps": 10})
    folder = train(recipe, "swift")
    record = assert_complete_run(folder, "swift", 10)
    assert record["versions"]["ms-swift"].startswith("4.")
    assert record["backend_details"]["process_mode"] == "in-process"
    command = next(line for line in record["native_command"].splitlines() if not line.startswith("#"))
    assert "HF_HUB_OFFLINE=1" in command and command.endswith("swift sft \\")
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-3

    # paste the printed command into a shell: the same per-step losses, without unifier
    again = tmp_path / "again"
    plan = unify("plan", str(recipe), "--backend", "swift", "--set", f"output.dir={again}")
    assert plan.returncode == 0, plan.stderr
    assert "--weight_decay 0.0" in plan.stdout and "--lora_dropout 0.0" in plan.stdout
    (again / "data").mkdir(parents=True)
    (again / "data" / "train.jsonl").write_text((folder / "data" / "train.jsonl").read_text())
    script = tmp_path / "train.sh"
    script.write_text("set -e\n" + plan.stdout)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's `swift` entry point
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PATH": path}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_hand = losses(read_jsonl(again / "checkpoints" / "logging.jsonl"))
    assert by_hand == pytest.approx(losses(read_jsonl(folder / "metrics.jsonl")), rel=1e-6)


def test_qlora_nf4_on_cpu(tiny_recipe, tiny_model_dir):
    folder = train(
        tiny_recipe(
            {"training.max_steps": 6, "training.gradient_checkpointing": True}, base="tiny-cpu-qlora.yaml"
        ),
        "swift",
    )
    record = assert_complete_run(folder, "swift", 6)
    argv = payload_of(record["plan"])["argv"]
    assert argv[argv.index("--gradient_checkpointing") + 1] == "true"
    assert (
        argv[argv.index("--quant_bits") + 1] == "4" and argv[argv.index("--bnb_4bit_quant_type") + 1] == "nf4"
    )
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4
    assert quantized_adapter_effect(tiny_model_dir, folder / "adapter") > 1e-4


def test_qlora_merged_save_is_the_16_bit_base_plus_the_adapter(tiny_recipe, tiny_model_dir):
    recipe = tiny_recipe({"training.max_steps": 4, "output.save": "both"}, base="tiny-cpu-qlora.yaml")
    folder = train(recipe, "swift")
    record = assert_complete_run(folder, "swift", 4)
    assert record["backend_details"]["merged"] == str(folder / "merged")
    assert "unifier merges adapter/" in record["native_command"]
    assert (folder / "merged" / "tokenizer.json").is_file()
    assert merged_matches_adapter(tiny_model_dir, folder) < 1e-4


def test_full_fine_tuning(tiny_recipe, tiny_model_dir):
    folder = train(
        tiny_recipe({"adapter.type": "full", "training.max_steps": 5, "training.learning_rate": 1e-3}),
        "swift",
    )
    assert_complete_run(folder, "swift", 5, artifact="model")
    from safetensors.torch import load_file

    tuned, base = (
        load_file(folder / "model" / "model.safetensors"),
        load_file(tiny_model_dir / "model.safetensors"),
    )
    assert any((tuned[k] - base[k]).abs().max() > 0 for k in base)


TWO_PROCESSES = {
    "training.max_steps": REFERENCE_STEPS,
    "training.per_device_batch_size": 2,
    "compute.nproc_per_node": 2,
    "training.save_steps": 4,
}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Two processes, two rows each (global batch 4, as the reference run's one process with four), gloo."""
    folder = tmp_path_factory.mktemp("ddp")
    raw = load_recipe()
    raw["output"]["dir"] = str(folder / "runs" / "{name}-{backend}")
    raw["name"] = "ddp"
    for dotted, value in {**TWO_PROCESSES, "compute.master_port": 29731}.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return train(write_recipe(folder, raw), "swift")


def test_two_process_cpu_run_is_really_data_parallel(ddp_run, reference_runs, tiny_recipe):
    record = assert_complete_run(ddp_run, "swift", REFERENCE_STEPS)
    check = record["backend_details"]["rank_check"]
    assert check == {"ranks": 2, "world_size": 2, "identical_weights": True, "process_group_backend": "gloo"}
    assert "NPROC_PER_NODE=2" in record["native_command"] and "--use_cpu true" in record["native_command"]
    # the same global batch in one process (the session's reference run) gives the same training
    one_process = losses(read_jsonl(reference_runs[3]["swift"] / "metrics.jsonl"))
    assert losses(read_jsonl(ddp_run / "metrics.jsonl")) == pytest.approx(one_process, rel=1e-5)
    # FSDP2 over the same two processes trains the same model (full sharding, gloo on CPU)
    fsdp2 = {**TWO_PROCESSES, "compute.master_port": 29733, "compute.strategy": "fsdp2", "name": "fsdp2"}
    sharded = train(tiny_recipe(fsdp2, name="fsdp2.yaml"), "swift")
    sharded_record = assert_complete_run(sharded, "swift", REFERENCE_STEPS)
    assert "--fsdp fsdp2" in sharded_record["native_command"]
    assert sharded_record["backend_details"]["rank_check"]["ranks"] == 2
    assert losses(read_jsonl(sharded / "metrics.jsonl")) == pytest.approx(
        losses(read_jsonl(ddp_run / "metrics.jsonl")), rel=1e-5
    )


def test_two_processes_sigkill_then_resume_equals_the_uninterrupted_run(ddp_run, tiny_recipe):
    from .test_resume_and_interruptions import assert_resumed_like, kill_and_resume

    recipe = tiny_recipe({**TWO_PROCESSES, "compute.master_port": 29761, "name": "killed"})
    assert_resumed_like(kill_and_resume(recipe, "swift"), ddp_run, REFERENCE_STEPS)


def test_rank_check_fails_loudly_on_independent_copies(tmp_path):
    step = CheckRanks(ranks_dir=str(tmp_path / "unifier_ranks"), expected_ranks=2, world_size=2)
    ranks = tmp_path / "unifier_ranks"
    ranks.mkdir()
    for rank, digest in enumerate(["aaa", "bbb"]):
        (ranks / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": 2,
                    "distributed_initialized": True,
                    "backend": "gloo",
                    "trainable_digest": digest,
                }
            )
        )
    with pytest.raises(RuntimeError, match="different weights"):
        verify_ranks(step)
    (ranks / "rank1.json").unlink()
    with pytest.raises(RuntimeError, match="1 of 2 ranks"):
        verify_ranks(step)


def test_dpo_through_swift_rlhf(tiny_recipe, tiny_model_dir):
    recipe = tiny_recipe(
        {
            "training.method": "dpo",
            "data.train": [{"path": "builtin:tiny-preference"}],
            "training.max_steps": 30,
            "training.per_device_batch_size": 2,
            "training.learning_rate": 5e-3,
        }
    )
    folder = train(recipe, "swift")
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and "swift rlhf" in record["native_command"]
    rows = [r for r in read_jsonl(folder / "metrics.jsonl") if r.get("loss") is not None]
    assert len(rows) == 30 and abs(rows[0]["loss"] - 0.6931) < 1e-3
    assert preference_margin(tiny_model_dir, folder / "adapter", folder) > 0.05


def test_raw_text_continued_pretraining(tiny_recipe, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"The capital of country {i} is city {i}."}) + "\n" for i in range(40))
    )
    folder = train(tiny_recipe({"data.train": [{"path": str(corpus)}], "training.max_steps": 6}), "swift")
    record = assert_complete_run(folder, "swift", 6)
    argv = payload_of(record["plan"])["argv"]
    assert argv[argv.index("--loss_scale") + 1] == "all"
    view = read_jsonl(folder / "data" / "train.swift.jsonl")[0]
    assert view["messages"][0]["role"] == "assistant" and view["messages"][0]["content"].startswith(
        "The capital"
    )


def test_two_nodes_share_one_run_folder_that_only_node_0_prepares(tiny_recipe):
    """nnodes 2 on one machine (a node per process, gloo): node 1 starts first and waits; node 0 claims and
    prepares the shared folder; node 1 writes nothing into it and trains as rank 1."""
    import subprocess
    import sys

    settings = {
        "training.max_steps": 3,
        "compute.nnodes": 2,
        "compute.nproc_per_node": 1,
        "compute.master_port": 29781,
        "training.per_device_batch_size": 2,
    }
    recipe = tiny_recipe(settings)
    command = [sys.executable, "-m", "unifier.cli", "run", str(recipe), "--backend", "swift"]
    node1 = subprocess.Popen(
        [*command, "--set", "compute.node_rank=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "UNIFIER_NODE_WAIT_S": "300"},
    )
    folder = tiny_recipe_folder(recipe)
    node0 = unify("run", str(recipe), "--backend", "swift")
    out1, err1 = node1.communicate(timeout=600)
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, err1[-3000:]
    assert "completed (node 1)" in out1
    record = assert_complete_run(folder, "swift", 3)
    assert record["backend_details"]["rank_check"]["ranks"] == 2
    assert record["pid"] != node1.pid and "NODE_RANK=0" in record["native_command"]


def tiny_recipe_folder(recipe):
    from .conftest import run_folder_of

    return run_folder_of(recipe, "swift")
