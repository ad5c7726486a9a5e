"""The embedded default (`unify demo`) and the library example run end to end on CPU."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, demo_output

pytestmark = pytest.mark.slow


def test_demo_trains_the_tiny_model_and_shows_before_and_after(demo_run, tmp_path_factory):
    stdout = demo_output(tmp_path_factory)["stdout"]
    assert "(falling)" in stdout and "before:" in stdout and "after:" in stdout
    before = stdout.split("before:")[1].splitlines()[0]
    after = stdout.split("after:")[1].splitlines()[0]
    assert before != after  # the adapter changes what the model says
    eval_line = next(line for line in stdout.splitlines() if "`unify eval`" in line)
    report = json.loads((demo_run / "eval" / "eval.json").read_text())
    assert f"loss {report['task']['base']['loss']:.3f} -> {report['task']['tuned']['loss']:.3f}" in eval_line
    record = json.loads((demo_run / "run.json").read_text())
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
