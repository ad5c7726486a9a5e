"""bench/gpu.sh, ready for a lent GPU: its CPU smoke mode end to end, and the packages it needs."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench import gpu_packages

ROOT = Path(__file__).resolve().parents[1]


def _image_packages() -> set[str]:
    lines = (ROOT / "tests/gpu/image_packages.txt").read_text().splitlines()
    return {gpu_packages.canonical(line) for line in lines if line.strip() and not line.startswith("#")}


def _wheel_bundles() -> dict[str, set[str]]:
    script = (ROOT / "tests/gpu/fetch_wheels.sh").read_text()
    bundles = dict(re.findall(r'^\s*(\w)\) packages="([^"]+)"', script, flags=re.M))
    return {
        key: {gpu_packages.canonical(re.split(r"[=<>!]", item)[0]) for item in value.split()}
        for key, value in bundles.items()
    }


def test_every_package_a_gpu_run_needs_is_on_the_image_or_carried_as_a_wheel():
    image, bundles = _image_packages(), _wheel_bundles()
    carried = set().union(*bundles.values())
    assert len(bundles) >= 2 and not (carried & image), "carry only what the image lacks"

    def requires_of(name):
        if name in image:
            return []  # the image's own packages come with what they need
        if name in carried:
            return gpu_packages.installed_requirements(name) or []  # the wheel's version is this venv's
        return None

    needed = gpu_packages.closure(requires_of)
    missing = sorted(name for name, known in needed.items() if not known)
    assert not missing, (
        f"neither on the GPU image nor in a wheel bundle of tests/gpu/fetch_wheels.sh: {missing}"
    )
    unused = sorted(carried - set(needed))
    assert not unused, f"carried but not needed: {unused}"
    for core in ("pydantic", "trl", "bitsandbytes", "unsloth", "unsloth-zoo", "datasets"):
        assert needed.get(core) is True, core


@pytest.mark.slow
def test_gpu_bench_cpu_smoke_runs_every_backend_and_method(tmp_path):
    env_out = tmp_path / "out"
    result = subprocess.run(
        ["bash", "bench/gpu.sh", "--cpu-smoke", "--models", "qwen2.5-1.5b", "--work", str(tmp_path / "work")],
        cwd=ROOT,
        env={**__import__("os").environ, "OUT": str(env_out)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    merged = json.loads((env_out / "gpu_results.json").read_text())
    bench = merged["benchmark"]
    assert bench["meta"]["mode"] == "cpu-smoke"
    assert merged["exit_codes"]["gpu_checks"] == "skipped"
    runs = {(r["backend"], r["method"]): r for r in bench["runs"]}
    assert set(runs) == {(b, m) for b in ("peft", "unsloth", "swift") for m in ("lora", "qlora")}
    for key, run in runs.items():
        assert run["status"] == "ok", (key, run.get("log_tail"))
        assert run["steps"] == 4 and run["tokens_per_s"] > 0 and run["peak_memory_gib"] > 0, key
        assert run["estimated_gib"] and run["estimated_gib"] > 0, key
        assert run["mfu"] is None  # no GPU peak rate on a CPU
    # the random token rows are fixed-length: every step sees batch x seq_len tokens
    assert {r["tokens_per_s"] > 0 for r in runs.values()} == {True}
    ratios = {(r["backend"], r["method"]) for r in bench["ratios"]}
    assert ratios == {(b, m) for b in ("unsloth", "swift") for m in ("lora", "qlora")}
    packages = (env_out / "packages.txt").read_text()
    assert "0 missing" in packages, packages[-500:]
