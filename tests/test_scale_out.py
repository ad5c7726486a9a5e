"""Several processes and nodes on CPU (gloo): the peft backend under torchrun (DDP, FSDP2), a rank killed
mid-run on every backend that runs several processes, and a two-node job started by the sbatch script
`unify plan --launcher slurm` writes, run on loopback with stand-ins for Slurm's srun and scontrol. The
ms-swift side (DDP, FSDP2, kill and resume, two nodes) is tests/test_backend_swift.py; peft vs swift on two
processes is tests/parity."""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import (
    REFERENCE_STEPS,
    TWO_PROCESSES,
    assert_complete_run,
    read_jsonl,
    run_folder_of,
    train,
    unify,
)

FAKE_SRUN = """#!/usr/bin/env bash
# a stand-in for Slurm's srun on one machine: one task per node of the allocation, each with its SLURM_NODEID
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
    pids+=($!)
done
code=0
for pid in "${pids[@]}"; do wait "$pid" || code=$?; done
exit $code
"""
FAKE_SCONTROL = "#!/usr/bin/env bash\necho 127.0.0.1\n"  # `scontrol show hostnames`: the allocation's hosts


def losses(folder) -> list[float]:
    return [row["loss"] for row in read_jsonl(folder / "metrics.jsonl") if row.get("loss") is not None]


@pytest.mark.slow
def test_two_peft_processes_train_one_model_as_one_process_with_twice_the_accumulation(
    two_process_runs, tiny_recipe
):
    ddp = two_process_runs.run("peft")
    record = assert_complete_run(ddp, "peft", REFERENCE_STEPS)
    assert record["backend_details"]["rank_check"] == {
        "ranks": 2,
        "world_size": 2,
        "identical_weights": True,
        "process_group_backend": "gloo",
    }
    assert record["native_command"].startswith("python -m torch.distributed.run --nproc_per_node 2")
    assert len(read_jsonl(ddp / "metrics.jsonl")) == REFERENCE_STEPS  # the main process writes, once per step
    # one process reading the same rows in the same order: two micro-batches of 2 per step instead of two ranks
    one = {**TWO_PROCESSES, "compute.nproc_per_node": 1, "training.gradient_accumulation_steps": 2}
    single = train(tiny_recipe(one, name="one.yaml"), "peft")
    assert losses(single) == pytest.approx(losses(ddp), rel=1e-5)
    # FSDP2 over the same two processes (ms-swift's preset: full sharding, activation checkpointing)
    sharded_changes = {**TWO_PROCESSES, "compute.strategy": "fsdp2", "compute.master_port": 29743}
    sharded = train(tiny_recipe(sharded_changes, name="fsdp2.yaml"), "peft")
    sharded_record = assert_complete_run(sharded, "peft", REFERENCE_STEPS)
    assert sharded_record["backend_details"]["rank_check"]["ranks"] == 2
    config = sharded_record["plan"]["program"]["config"]["trainer_args"]
    assert config["fsdp"] == "full_shard auto_wrap" and config["fsdp_config"]["fsdp_version"] == 2
    assert losses(sharded) == pytest.approx(losses(ddp), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "swift"])
def test_deepspeed_zero3_on_cpu_processes_trains_the_ddp_model(two_process_runs, tiny_recipe, backend):
    """ZeRO-3 over gloo: each rank holds a slice of every weight, and the result is the DDP run's."""
    import torch

    port = {"peft": 29791, "swift": 29793}[backend]
    changes = {
        **TWO_PROCESSES,
        "compute.strategy": "zero3",
        "compute.master_port": port,
        "output.probe": True,
    }
    zero3 = train(tiny_recipe(changes, name=f"zero3-{backend}.yaml"), backend)
    record = assert_complete_run(zero3, backend, REFERENCE_STEPS)
    ddp = two_process_runs.run("peft")
    assert losses(zero3) == pytest.approx(losses(ddp), rel=1e-5)
    weights, reference = adapter_weights(zero3), adapter_weights(ddp)  # gathered from the slices to be saved
    assert weights.keys() == reference.keys()
    for name, value in weights.items():
        assert torch.allclose(value, reference[name], atol=1e-5), name
    # the rank check digests whole weights (gathered), not the empty tensors a ZeRO-3 rank keeps
    assert record["backend_details"]["rank_check"]["identical_weights"] is True
    ranks = [json.loads(p.read_text()) for p in sorted((zero3 / "native" / "ranks").glob("rank*.json"))]
    assert {r["trainable_digest"] for r in ranks} == {digest_of_saved_adapter(weights)}
    # so does the probe (output.probe): whole initial weights, their true sizes
    trainable = json.loads((zero3 / "probe" / "trainable.json").read_text())
    assert trainable["count"] == sum(value.numel() for value in weights.values())
    if backend == "peft":
        assert (
            record["plan"]["program"]["config"]["trainer_args"]["deepspeed"]["zero_optimization"]["stage"]
            == 3
        )
    else:
        assert "--deepspeed zero3" in record["native_command"]


def adapter_weights(run) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def digest_of_saved_adapter(weights: dict) -> str:
    """backends/probe.trainable_digest of the model these adapter weights were saved from (peft drops the
    adapter name 'default' when it saves)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    named = sorted((name.replace(".weight", ".default.weight"), value) for name, value in weights.items())
    for name, value in named:
        digest.update(name.encode())
        digest.update(value.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_process(root: psutil.Process, rank: int, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in root.children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "LOCAL_RANK" in child.environ():
                    return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no training process of rank {rank} appeared")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "swift"])
def test_a_rank_killed_mid_run_ends_the_whole_job_and_is_named(tiny_recipe, backend):
    port = {"peft": 29751, "swift": 29753}[backend]
    changes = {**TWO_PROCESSES, "training.max_steps": 400, "compute.master_port": port}
    recipe = tiny_recipe(changes, name=f"killed-{backend}.yaml")
    folder = run_folder_of(recipe, backend)
    command = [sys.executable, "-m", "unifier.cli", "run", str(recipe), "--backend", backend]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(job.pid)
    victim = rank_process(root, 1)
    deadline = time.monotonic() + 120
    while len(read_jsonl(folder / "metrics.jsonl")) < 2:  # mid-run: a few steps trained
        assert time.monotonic() < deadline and job.poll() is None, "the run did not start training"
        time.sleep(0.2)
    everything = root.children(recursive=True)
    victim.kill()
    _out, err = job.communicate(timeout=180)  # bounded: torchrun stops the other rank, unifier ends
    assert job.returncode == 1, err[-3000:]
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed"
    first = record["failed_ranks"][0]
    assert first["rank"] == 1 and first["signal"] == "SIGKILL", record["failed_ranks"]
    assert record["error"].startswith("RanksFailed: rank 1 (local rank 1 on ")
    assert "rank 1" in err and "killed by SIGKILL" in err and "Traceback" not in err
    _gone, alive = psutil.wait_procs(everything, timeout=60)
    assert not alive, f"left running: {alive}"


def test_the_killed_rank_is_named_first_even_when_its_peer_raised_in_the_same_second(tmp_path):
    from unifier.backends.ranks import failed_ranks

    failures = tmp_path / "failures-node0.json"
    lost_peer = "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4321"
    records = [
        {
            "rank": 0,
            "local_rank": 0,
            "host": "h",
            "pid": 1,
            "exitcode": 1,
            "timestamp": 100,
            "signal": None,
            "message": lost_peer,
        },
        {
            "rank": 1,
            "local_rank": 1,
            "host": "h",
            "pid": 2,
            "exitcode": -9,
            "timestamp": 101,
            "signal": "SIGKILL",
            "message": "",
        },
        {
            "rank": 2,
            "local_rank": 2,
            "host": "h",
            "pid": 3,
            "exitcode": -15,
            "timestamp": 99,
            "signal": "SIGTERM",
            "message": "",
        },
    ]
    failures.write_text(json.dumps(records))
    error = failed_ranks(failures, 1)
    assert [f["rank"] for f in error.failures] == [1, 0, 2]
    assert str(error).startswith("rank 1 (local rank 1 on h) was killed by SIGKILL; then rank 0 ")
    # a real error is a cause: within the same second, the signal-killed rank still goes first
    records[0]["message"], records[0]["timestamp"] = "ValueError: a bad batch", 101
    failures.write_text(json.dumps(records))
    assert [f["rank"] for f in failed_ranks(failures, 1).failures] == [1, 0, 2]
    records[0]["timestamp"] = 100  # a rank that raised a second earlier is the cause
    failures.write_text(json.dumps(records))
    assert [f["rank"] for f in failed_ranks(failures, 1).failures] == [0, 1, 2]


@pytest.mark.slow
def test_the_slurm_script_starts_two_nodes_that_train_one_model_in_one_run_folder(tiny_recipe, tmp_path):
    """`unify plan --launcher slurm --write DIR` on a two-node recipe; the sbatch script runs as Slurm would run
    it (the allocation's variables set, srun starting one task per node with its SLURM_NODEID) on loopback: node
    0 prepares the shared run folder, node 1 waits for it, both train as ranks 0 and 1 of one job."""
    settings = {
        "training.max_steps": 3,
        "training.per_device_batch_size": 2,
        "compute.nnodes": 2,
        "compute.nproc_per_node": 1,
    }
    recipe = tiny_recipe(settings, name="two-nodes.yaml")
    jobs = tmp_path / "jobs"
    written = unify(
        "plan", str(recipe), "--backend", "peft", "--launcher", "slurm", "--write", str(jobs), "-q"
    )
    assert written.returncode == 0, written.stderr[-3000:]
    script = jobs / "tiny-cpu-sft.sbatch"
    assert script.read_text() == written.stdout and "#SBATCH --nodes=2" in written.stdout
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[1-2]"}
    env = {**os.environ, **slurm, "PATH": f"{fake}:{os.environ['PATH']}", "MASTER_PORT": "29771"}
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "completed (node 1)" in result.stdout
    folder = run_folder_of(recipe, "peft")
    record = assert_complete_run(folder, "peft", 3)
    assert record["backend_details"]["rank_check"]["ranks"] == 2
    assert "--nnodes 2 --node_rank 0 --master_addr 127.0.0.1 --master_port 29771" in record["native_command"]
    assert len(read_jsonl(folder / "metrics.jsonl")) == 3  # one metrics.jsonl, written by rank 0
    assert sorted(p.name for p in (folder / "native" / "ranks").iterdir()) == ["rank0.json", "rank1.json"]


def test_launch_files_name_every_node_and_refuse_what_they_cannot_launch(tiny_recipe, tmp_path):
    two_nodes = tiny_recipe({"compute.nnodes": 2, "compute.nproc_per_node": 4, "compute.device": "cuda"})
    slurm = unify("plan", str(two_nodes), "-b", "swift", "--launcher", "slurm", "-q")
    assert slurm.returncode == 0, slurm.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "--kill-on-bad-exit=1", "scontrol show"):
        assert line in slurm.stdout, line
    assert 'compute.node_rank="$SLURM_NODEID"' in slurm.stdout and str(two_nodes) in slurm.stdout
    per_node = unify("plan", str(two_nodes), "-b", "peft", "--launcher", "torchrun", "-q")
    assert per_node.returncode == 0, per_node.stderr
    for rank in (0, 1):
        assert f"--nnodes 2 --node_rank {rank} --master_addr 127.0.0.1" in per_node.stdout
        assert f"--set compute.node_rank={rank}" in per_node.stdout
    assert "every node must reach node 0 there" in per_node.stdout  # the loopback default cannot span nodes
    one = unify("plan", str(tiny_recipe(name="one.yaml")), "--launcher", "slurm")
    assert one.returncode == 2 and "trains one process" in one.stderr
    odd = unify("plan", str(two_nodes), "-b", "swift", "--launcher", "mpi")
    assert odd.returncode == 2 and "expected one of slurm, torchrun" in odd.stderr
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tiny-cpu-sft.sbatch").write_text("#!/bin/bash\n# the user's own job\n")
    kept = unify("plan", str(two_nodes), "-b", "swift", "--launcher", "slurm", "--write", str(jobs))
    assert kept.returncode == 2 and "not written by `unify plan --launcher`" in kept.stderr
    assert (jobs / "tiny-cpu-sft.sbatch").read_text() == "#!/bin/bash\n# the user's own job\n"


def test_peft_several_processes_plan_torchrun_and_the_rank_check(tiny_recipe):
    from unifier.core import plan
    from unifier.spec import load_spec

    the_plan = plan(load_spec(tiny_recipe({"compute.nproc_per_node": 2})), "peft")
    assert the_plan.program.command()[:4] == ["python", "-m", "torch.distributed.run", "--nproc_per_node"]
    assert "rank_check" in the_plan.callbacks and "progress" not in the_plan.callbacks
    assert [step.kind for step in the_plan.after_training] == ["check_ranks"]
    assert "\n# several processes: python -m torch.distributed.run" in the_plan.render()
