"""bench/gpu.sh, ready for a lent GPU: the packages it carries, unifier run from a copy of the tree with nothing
installed (as on the device machine), and the whole script in --cpu-smoke mode under the device tool's rules:
PYTHONPATH only, one wheel bundle installed once, one deadline, at most 8 files back."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench import gpu_packages, gpu_wheels

ROOT = Path(__file__).resolve().parents[1]
NO_INSTALL = ROOT / "tests" / "gpu" / "no_install"  # its sitecustomize removes this venv's editable install


def _image_packages() -> set[str]:
    lines = (ROOT / "tests/gpu/image_packages.txt").read_text().splitlines()
    return {gpu_packages.canonical(line) for line in lines if line.strip() and not line.startswith("#")}


def test_every_package_a_gpu_run_needs_is_on_the_image_or_in_the_one_bundle():
    image = _image_packages()
    carried = {gpu_packages.canonical(name) for name in gpu_wheels.CARRIED}
    left_out = {gpu_packages.canonical(name) for name in gpu_wheels.NOT_CARRIED}
    assert not (carried & image) and not (carried & left_out), "carry only what the image lacks, once"

    def requires_of(name):
        if name in image or name in left_out:
            return []  # the image's own packages come with what they need; left-out ones are never imported
        if name in carried:
            return gpu_packages.installed_requirements(name) or []  # the wheel's version is this venv's
        return None

    needed = gpu_packages.closure(requires_of, extras=("peft", "unsloth", "swift"))
    missing = sorted(name for name, known in needed.items() if not known)
    assert not missing, f"neither on the GPU image nor carried by bench/gpu_wheels.py: {missing}"
    unused = sorted((carried | left_out) - set(needed))
    assert not unused, f"listed in bench/gpu_wheels.py but not needed: {unused}"
    for core in ("pydantic", "trl", "bitsandbytes", "unsloth", "unsloth-zoo", "datasets", "ms-swift"):
        assert core in carried, core


def copy_of_the_tree(target: Path) -> Path:
    """The working tree as the device tool sends it: tracked and untracked files git does not ignore."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            (target / name.decode()).write_bytes(source.read_bytes())
    return target


def no_install_env(tree: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "PYTHONPATH": f"{NO_INSTALL}{os.pathsep}{tree}", "PYTHON": sys.executable, **extra}


def test_the_cli_runs_from_a_copy_of_the_tree_with_nothing_installed(tmp_path):
    tree = copy_of_the_tree(tmp_path / "tree")
    env = no_install_env(tree)
    where = subprocess.run(
        [sys.executable, "-c", "import unifier.backends.swift as s, unifier; print(unifier.__file__, s.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.split() == [
        str(tree / "unifier" / "__init__.py"),
        str(tree / "backends" / "swift.py"),
    ]
    recipe = tree / "recipes" / "tiny-cpu-sft.yaml"
    for args in (["--help"], ["backends"], ["validate", str(recipe)], ["plan", str(recipe), "-b", "swift"]):
        result = subprocess.run(
            [sys.executable, "-m", "unifier.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, (args, result.stderr[-2000:])
    assert "swift sft" in result.stdout


def probe_wheel(folder: Path) -> Path:
    """A one-module wheel standing in for the carried bundle (the real one needs Python 3.12 and the network)."""
    folder.mkdir(parents=True)
    wheel = folder / "unifier_smoke_probe-0.1-py3-none-any.whl"
    info = "unifier_smoke_probe-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("unifier_smoke_probe.py", "CARRIED = True\n")
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: unifier-smoke-probe\nVersion: 0.1\n"
        )
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.mark.slow
def test_the_gpu_script_in_cpu_smoke_mode_under_the_device_rules(tmp_path):
    tree = copy_of_the_tree(tmp_path / "tree")
    probe_wheel(tree / ".whl")
    out, site = tmp_path / "out", tmp_path / "site"
    env = no_install_env(
        tree, OUT=str(out), UNIFIER_SITE=str(site), UNIFIER_GPU_WORK=str(tmp_path / "work"),
        UNIFIER_GPU_BUDGET_S="600",
    )  # fmt: skip
    args = [
        "--cpu-smoke",
        "--models",
        "qwen2.5-1.5b,qwen3-8b",
        "--methods",
        "qlora",
        "--backends",
        "peft,unsloth",
    ]
    args += ["--estimate", "qwen3-8b=100000"]  # the second model cannot fit: neither built nor run
    result = subprocess.run(
        ["bash", "bench/gpu.sh", *args], cwd=tree, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (
        result.stdout.count("installed 1 wheels") == 1
    )  # once, and not again by tests/gpu/run_gpu_checks.sh
    assert (site / "unifier_smoke_probe.py").is_file()

    back = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in back) == [
        "gpu_results.json",
        "logs.tar.gz",
    ]  # the tool brings back 8 at most
    merged = json.loads((out / "gpu_results.json").read_text())
    bench = merged["benchmark"]
    meta = bench["meta"]
    assert meta["mode"] == "cpu-smoke" and meta["unifier_from"] == str(tree / "unifier")
    runs = {(r["model"], r["backend"]): r for r in bench["runs"]}
    assert set(runs) == {(m, b) for m in ("qwen2.5-1.5b", "qwen3-8b") for b in ("peft", "unsloth")}
    for backend in ("peft", "unsloth"):
        run = runs["qwen2.5-1.5b", backend]
        assert run["status"] == "ok", (backend, run.get("log_tail"))
        assert run["steps"] == 4 and run["tokens_per_s"] > 0 and run["peak_memory_gib"] > 0
        assert run["estimated_gib"] and run["estimated_gib"] > 0
        assert run["mfu"] is None and run["mfu_measured_peak"] is None  # no GPU peak rate on a CPU
        assert run["timeout_s"] <= run["left_at_start_s"] <= 600  # no process may outlive the deadline
        skipped = runs["qwen3-8b", backend]
        assert skipped["status"] == "skipped" and "could not hold building the model" in skipped["reason"]
    assert not (tmp_path / "work" / "qwen3-8b-smoke").exists()
    (ratio,) = bench["ratios"]
    assert ratio["backend"] == "unsloth" and ratio["loss_max_relative_difference"] < 1e-3  # the same training
    checks = merged["gpu_checks"]
    assert (
        checks["exit_code"] == 0 and "skipped" in checks["summary"][0]
    )  # tests/gpu ran (and skipped: no CUDA)
    assert merged["exit_codes"] == {"gpu_checks": 0, "benchmark": 0}
    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
    assert {"qwen2.5-1.5b-qlora-peft.log", "qwen2.5-1.5b-qlora-unsloth.log", "gpu_checks.log"} <= set(names)
