"""The embedded default (`unify demo`) and the library example run end to end on CPU."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, unify

pytestmark = pytest.mark.slow


def test_demo_trains_the_tiny_model_and_shows_before_and_after(tmp_path):
    result = unify("demo", "--output", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(falling)" in result.stdout and "before:" in result.stdout and "after:" in result.stdout
    before = result.stdout.split("before:")[1].splitlines()[0]
    after = result.stdout.split("after:")[1].splitlines()[0]
    assert before != after  # the adapter changes what the model says
    eval_line = next(line for line in result.stdout.splitlines() if "`unify eval`" in line)
    report = json.loads((tmp_path / "demo" / "eval" / "eval.json").read_text())
    assert f"loss {report['task']['base']['loss']:.3f} -> {report['task']['tuned']['loss']:.3f}" in eval_line
    record = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert (
        record["status"] == "completed"
        and record["final_metrics"]["last_loss"] < record["final_metrics"]["first_loss"]
    )


def test_library_example_script(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library_api.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ms-swift would run:" in result.stdout and "swift sft" in result.stdout
    assert "status: completed, backend: peft, steps: 20" in result.stdout
    assert "tuned answer: " in result.stdout and "task loss: base " in result.stdout
    assert (tmp_path / "run" / "export" / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
