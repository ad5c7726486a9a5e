"""Never lose a run: SIGKILL then `unify resume` gives the uninterrupted run; SIGTERM/SIGINT stop cleanly."""

from __future__ import annotations

import json
import signal
import time

import pytest

from .conftest import REFERENCE_STEPS, read_jsonl, run_folder_of, train, unify
from .helpers import assert_resumed_like, kill_and_resume, losses, start, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["peft", "swift", "unsloth"])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tiny_recipe, reference_runs, backend):
    """The reference is the session's uninterrupted run of the same recipe (tests/conftest.py); this one saves
    a checkpoint every 4 steps, is SIGKILLed after checkpoint-8 and resumed."""
    recipe = tiny_recipe({"training.max_steps": REFERENCE_STEPS, "training.save_steps": 4, "name": "killed"})
    folder = kill_and_resume(recipe, backend)
    assert_resumed_like(folder, reference_runs.run(backend), REFERENCE_STEPS)


def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resume_finishes(tiny_recipe):
    recipe = tiny_recipe({"training.max_steps": 400, "training.save_steps": 1000})
    folder = run_folder_of(recipe, "peft")
    process = start(recipe, "peft")
    wait_for(folder / "metrics.jsonl", process)
    while not read_jsonl(folder / "metrics.jsonl"):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert f"unify resume {folder}" in stderr and "Traceback" not in stderr
    record = json.loads((folder / "run.json").read_text())
    interrupted = record["interrupted"]
    assert record["status"] == "interrupted" and interrupted["signal"] == "SIGTERM"
    step = interrupted["checkpoint_step"]
    assert 0 < step < 400 and (folder / "checkpoints" / f"checkpoint-{step}" / "optimizer.pt").is_file()
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()  # the interrupted state, usable
    assert interrupted["resume_command"] == f"unify resume {folder}"
    resumed = unify("resume", str(folder), "--force", "--set", f"training.max_steps={step + 5}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        max(losses(folder)) == step + 5
        and json.loads((folder / "run.json").read_text())["status"] == "completed"
    )


def test_ctrl_c_twice_stops_at_once_and_the_folder_stays_resumable(tiny_recipe):
    recipe = tiny_recipe({"training.max_steps": 2000, "training.save_steps": 3})
    folder = run_folder_of(recipe, "peft")
    process = start(recipe, "peft")
    wait_for(folder / "checkpoints" / "checkpoint-3" / "trainer_state.json", process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "SIGINT: stopping at the next optimizer step" in stderr  # on the terminal, not only in run.log
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted"]["signal"] == "SIGINT"
    assert record["interrupted"]["checkpoint_step"] >= 3


def test_resume_refuses_a_changed_recipe_or_changed_data(tiny_recipe, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}]}
        for i in range(12)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe({"training.max_steps": 4, "data.train": [{"path": str(data)}]})
    folder = train(recipe, "peft")
    changed = unify("resume", str(folder), "--set", "training.learning_rate=0.1")
    assert changed.returncode == 2 and "training.learning_rate: 0.003 -> 0.1" in changed.stderr
    forced = unify("resume", str(folder), "--force", "--set", "training.learning_rate=0.1")
    assert forced.returncode == 2 and "cannot change on resume" in forced.stderr
    done = unify("resume", str(folder))
    assert done.returncode == 2 and "already completed" in done.stderr
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    resumed = unify("run", str(recipe), "--backend", "peft", "--resume", "--set", "training.max_steps=6")
    assert resumed.returncode == 2 and "differs" in resumed.stderr  # max_steps without --force
    forced = unify("resume", str(folder), "--force", "--set", "training.max_steps=6")
    assert forced.returncode == 2 and "training data differ" in forced.stderr
