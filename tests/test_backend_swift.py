"""The ms-swift backend under torchrun on the tiny model (CPU, gloo): 2-process DDP and FSDP2, a killed 2-process
run resumed, the rank check, two nodes on one machine. 1-process LoRA, QLoRA, full, DPO and raw text are the
shared scenarios of tests/test_backend_scenarios.py."""

import json
import os
import subprocess
import sys

import pytest
from unifier.backends.after_training import verify_ranks
from unifier.backends.plan import CheckRanks

from .conftest import (
    REFERENCE_STEPS,
    TWO_PROCESSES,
    assert_complete_run,
    read_jsonl,
    train,
    unify,
)
from .helpers import assert_resumed_like, kill_and_resume

pytestmark = pytest.mark.slow


def losses(rows: list[dict]) -> list[float]:
    return [row["loss"] for row in rows if row.get("loss") is not None]


@pytest.fixture
def ddp_run(two_process_runs):
    """Two processes, two rows each (global batch 4, as the reference run's one process with four), gloo."""
    return two_process_runs.run("swift")


def test_two_process_cpu_run_is_really_data_parallel(ddp_run, reference_runs, tiny_recipe):
    record = assert_complete_run(ddp_run, "swift", REFERENCE_STEPS)
    check = record["backend_details"]["rank_check"]
    assert check == {"ranks": 2, "world_size": 2, "identical_weights": True, "process_group_backend": "gloo"}
    assert "NPROC_PER_NODE=2" in record["native_command"] and "--use_cpu true" in record["native_command"]
    # the same global batch in one process (the session's reference run) gives the same training
    one_process = losses(read_jsonl(reference_runs.run("swift") / "metrics.jsonl"))
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


def test_two_nodes_share_one_run_folder_that_only_node_0_prepares(tiny_recipe):
    """nnodes 2 on one machine (a node per process, gloo): node 1 starts first and waits; node 0 claims and
    prepares the shared folder; node 1 writes nothing into it and trains as rank 1."""

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
