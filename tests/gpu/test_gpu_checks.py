"""GPU checks: run by tests/gpu/run_gpu_checks.sh on a CUDA machine, skipped everywhere else.

1. unsloth's GPU path (not its CPU fallback) trains QLoRA on the tiny local model and saves a PEFT adapter.
2. Parity on GPU in bf16: peft vs unsloth (and ms-swift where it is installed) through `unify compare`,
   with the measured differences written to $UNIFIER_GPU_RESULTS so the tolerances come from a real run.
3. With two or more GPUs: peft vs ms-swift on two processes under DDP, ZeRO-2/3 and FSDP2 (NCCL, rank check).
4. With two or more GPUs: a stored 4-bit checkpoint (unsloth's dynamic 4-bit layout, on the tiny model) on
   ms-swift with one process and with every GPU: tokens/s of each and their ratio, recorded.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import (
    adapter_changes_output,
    assert_complete_run,
    load_recipe,
    run_folder_of,
    unify,
    write_recipe,
)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")]
STEPS = 20
GPU_BF16 = {"compute": {"device": "cuda"}, "model": {"dtype": "bfloat16"}}


def record(key: str, value) -> None:
    """Append one measured result to the file the GPU script brings back."""
    path = Path(os.environ.get("UNIFIER_GPU_RESULTS", "gpu_results.json"))
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def gpu_recipe(folder: Path, base: str, **sections) -> Path:
    raw = load_recipe(base)
    for section, values in {**GPU_BF16, **sections}.items():
        raw.setdefault(section, {}).update(values)
    if raw.get("quantization", {}).get("bits"):
        raw["quantization"]["compute_dtype"] = "bfloat16"
    raw["training"]["max_steps"] = STEPS
    raw["output"]["dir"] = str(folder / "runs" / "{name}-{backend}")
    return write_recipe(folder, raw)


def test_unsloth_gpu_path_trains_qlora_and_saves_an_adapter(tmp_path, tiny_model_dir):
    recipe = gpu_recipe(tmp_path, "tiny-cpu-qlora.yaml")
    result = unify(
        "run", str(recipe), "--backend", "unsloth", env={"UNSLOTH_DISABLE_CPU_FALLBACK": "1"}, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    folder = run_folder_of(recipe, "unsloth")
    run = assert_complete_run(folder, "unsloth", STEPS)
    record(
        "unsloth_gpu_qlora",
        {
            "backend_details": run["backend_details"],
            "host": run["host"],
            "final_metrics": run["final_metrics"],
            "versions": run["versions"],
        },
    )
    assert run["backend_details"]["unsloth_path"] == "gpu", "unsloth fell back to its CPU path"
    assert run["host"]["cuda_available"] is True
    assert adapter_changes_output(tiny_model_dir, folder / "adapter") > 1e-4


@pytest.mark.parametrize("base", ["tiny-cpu-sft.yaml", "tiny-cpu-qlora.yaml"])
def test_parity_on_gpu_in_bf16(tmp_path, base):
    backends = ["peft", "unsloth"] + (["swift"] if importlib.util.find_spec("swift") else [])
    recipe = gpu_recipe(tmp_path, base)
    output = tmp_path / "compare"
    # loose limits so the comparison always reports; the assertions below are the measured-tolerance gate
    result = unify(
        "compare",
        str(recipe),
        "--backends",
        ",".join(backends),
        "--output",
        str(output),
        "--loss-rtol",
        "1",
        "--weight-atol",
        "1",
        "--final-weight-atol",
        "10",
        timeout=1800,
    )
    report = json.loads((output / "compare.json").read_text()) if (output / "compare.json").is_file() else {}
    record(
        f"parity_{base.removesuffix('.yaml')}",
        {
            "backends": backends,
            "exit_code": result.returncode,
            "pairs": [
                {
                    k: p.get(k)
                    for k in (
                        "other",
                        "samples",
                        "trainable",
                        "initial_weights_max_abs_diff",
                        "final_weights_max_abs_diff",
                    )
                }
                | {"losses": p["losses"]}
                for p in report.get("pairs", [])
            ],
            "log_tail": (result.stdout + result.stderr)[-2000:],
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for pair in report["pairs"]:
        assert pair["samples"]["identical"] is True, pair["other"]
        assert pair["trainable"]["identical"] is True, pair["other"]
        assert pair["losses"]["steps_compared"] == STEPS
        # bf16 with different fused kernels (unsloth) drifts; 5% relative is the gate until a run records better
        assert pair["losses"]["max_relative_difference"] < 5e-2, pair["losses"]


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.skipif(not _cuda() or _gpus() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3", "fsdp2"])
def test_two_gpus_peft_vs_swift(tmp_path, strategy):
    """Several GPUs (NCCL): peft and ms-swift on two processes with each strategy, the rank check on both and
    the measured loss differences recorded (DeepSpeed needs the deepspeed package: `make setup-gpu`)."""
    if strategy.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    recipe = gpu_recipe(
        tmp_path,
        "tiny-cpu-sft.yaml",
        compute={"device": "cuda", "nproc_per_node": 2, "strategy": strategy, "master_port": 29811},
        training={"per_device_batch_size": 2},
    )
    output = tmp_path / "compare"
    result = unify(
        "compare", str(recipe), "--backends", "peft,swift", "--output", str(output),
        "--loss-rtol", "1", "--weight-atol", "1", "--final-weight-atol", "10", timeout=1800,
    )  # fmt: skip
    report = json.loads((output / "compare.json").read_text()) if (output / "compare.json").is_file() else {}
    record(
        f"two_gpus_{strategy}",
        {
            "exit_code": result.returncode,
            "losses": [p["losses"] for p in report.get("pairs", [])],
            "log_tail": (result.stdout + result.stderr)[-2000:],
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for run in report["runs"]:
        details = json.loads((Path(run["folder"]) / "run.json").read_text())["backend_details"]
        assert details["rank_check"]["process_group_backend"] == "nccl", run["backend"]
    (pair,) = report["pairs"]
    assert pair["samples"]["identical"] is True and pair["losses"]["max_relative_difference"] < 5e-2


@pytest.mark.skipif(not _cuda() or _gpus() < 2, reason="needs two CUDA GPUs")
def test_stored_4bit_weights_on_one_gpu_and_on_all(tmp_path):
    """unsloth's limit lifted: the same stored 4-bit weights on 1 GPU and on every GPU (ms-swift DDP), the
    global batch growing with the GPUs; tokens/s of each from metrics.jsonl."""
    from ..test_prequantized import BUILD, KEPT_16BIT

    model = tmp_path / "tiny-qwen2-bnb-4bit"
    built = subprocess.run(
        [sys.executable, "-c", BUILD, str(model), ",".join(KEPT_16BIT)], capture_output=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    speeds = {}
    for processes in (1, _gpus()):
        recipe = gpu_recipe(
            tmp_path / f"p{processes}",
            "tiny-cpu-qlora.yaml",
            model={"name_or_path": str(model), "dtype": "bfloat16"},
            compute={"device": "cuda", "nproc_per_node": processes, "master_port": 29821},
        )
        result = unify("run", str(recipe), "--backend", "swift", timeout=1800)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        rows = [json.loads(line) for line in (run_folder_of(recipe, "swift") / "metrics.jsonl").open()]
        tokens = rows[-1]["tokens_seen"] - rows[0]["tokens_seen"]
        speeds[processes] = tokens / sum(row["step_time"] for row in rows[1:])
    record("stored_4bit_tokens_per_second", {**speeds, "ratio": speeds[_gpus()] / speeds[1]})
    assert all(speed > 0 for speed in speeds.values())
