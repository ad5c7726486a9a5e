"""Experiment logging and quiet output (issue 14): output.report_to on every backend (tensorboard event files
read back with tensorboard's own reader), a missing tracker refused before anything loads, the schema's
examples that validate and plan, and a terminal that shows unifier's lines while run.log keeps the rest."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

from unifier.spec import JobSpec, spec_from_dict

from .conftest import REFERENCE_STEPS, load_recipe, read_jsonl, run_folder_of, unify

# what the libraries print on this machine during a tiny run (issue 14 lists them)
NOISE = re.compile(
    r"Failed to load|_pytree|kernels-community|Unsloth|unsloth_zoo|acc_strategy=|Loading weights|"
    r"Generating train split|Tokenizing train|\[INFO:swift\]|\[WARNING:swift\]|'loss': '|torch_dtype"
)


def tensorboard_losses(logs: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((logs / "tensorboard").glob("events.out.tfevents.*"))
    assert files, f"no tensorboard event file under {logs}"
    events = EventAccumulator(str(files[0]))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "swift", "unsloth"])
def test_report_to_tensorboard_and_a_quiet_terminal(reference_runs, backend):
    """The reference runs log to tensorboard; what `unify run` printed (compare keeps it) is unifier's lines only."""
    terminal = reference_runs.terminal[backend]
    steps = REFERENCE_STEPS
    assert not NOISE.search(terminal), terminal
    assert f"completed with {backend}: {steps} logged steps" in terminal
    assert re.search(rf"training .* {steps}/{steps} loss", terminal), terminal  # unifier's one progress bar

    folder = reference_runs.run(backend)
    log = (folder / "run.log").read_text(encoding="utf-8", errors="replace")
    assert NOISE.search(log), "the libraries' output is kept in run.log"
    logged = {m["step"]: m["loss"] for m in read_jsonl(folder / "metrics.jsonl") if "loss" in m}
    event_losses = tensorboard_losses(folder / "logs")
    assert sorted(event_losses) == list(range(1, steps + 1))
    for step, loss in logged.items():
        assert event_losses[step] == pytest.approx(loss, rel=1e-6)
    assert not (folder / "checkpoints" / "runs").exists()  # not deep in the trainer's output folder


@pytest.mark.slow
def test_failing_worker_shows_its_error_line(tiny_recipe):
    """A torchrun worker that fails prints into run.log; the terminal shows the error line and where the log is."""
    # a value whose type ms-swift declares as text or a mapping: only the worker finds it is not JSON
    recipe = tiny_recipe(
        {
            "training.max_steps": 2,
            "compute.nproc_per_node": 2,
            "backend_options": {"swift": {"lr_scheduler_kwargs": "not-json"}},
        }
    )
    result = unify("run", str(recipe), "--backend", "swift")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "JSONDecodeError: Expecting value" in result.stderr
    assert "run.log" in result.stderr and "Traceback" not in result.stdout
    # a value of the wrong type never reaches a worker: refused before anything starts
    typed = tiny_recipe({"backend_options": {"swift": {"lora_dropout": "not-a-number"}}}, name="typed.yaml")
    refused = unify("run", str(typed), "--backend", "swift")
    assert (
        refused.returncode == 2 and "lora_dropout: expected float, got text 'not-a-number'" in refused.stderr
    )


def test_missing_tracker_is_refused_before_anything_loads(tiny_recipe, tmp_path):
    missing = next(
        (name for name in ("swanlab", "trackio", "mlflow", "wandb") if not importlib.util.find_spec(name)),
        None,
    )
    if missing is None:
        pytest.skip("every tracker is installed here")
    recipe = tiny_recipe({"output.report_to": [missing]})
    result = unify("run", str(recipe), "--backend", "peft")
    assert result.returncode == 2
    assert f"output.report_to: {missing} is not installed (pip install {missing})" in result.stderr
    assert not run_folder_of(recipe, "peft").exists()
    validate = unify("validate", str(recipe))
    assert f"{missing} is not installed" in validate.stdout


def test_report_to_translation_is_the_same_for_every_backend(tmp_path):
    import unifier

    raw = load_recipe()
    raw["output"]["dir"] = str(tmp_path / "run")
    raw["output"]["report_to"] = ["tensorboard", "wandb"]
    spec = spec_from_dict(raw)
    logs = tmp_path / "run" / "logs"
    expected_env = {"TENSORBOARD_LOGGING_DIR": str(logs / "tensorboard"), "WANDB_DIR": str(logs)}
    for backend in ("peft", "unsloth"):
        config = unifier.plan(spec, backend=backend).to_json()["program"]["config"]
        assert config["trainer_args"]["report_to"] == ["tensorboard", "wandb"]
        assert config["tracker_env"] == expected_env
    swift = unifier.plan(spec, backend="swift").to_json()["program"]
    argv = swift["argv"]
    assert argv[argv.index("--report_to") + 1 : argv.index("--report_to") + 3] == ["tensorboard", "wandb"]
    assert expected_env.items() <= swift["env"].items()
    with pytest.raises(Exception, match="tensorboard is listed twice"):
        spec_from_dict({**raw, "output": {**raw["output"], "report_to": ["tensorboard", "tensorboard"]}})


def schema_examples(schema: dict) -> list[tuple[str, object]]:
    """(dotted path, example) for every `examples` in the recipe's JSON schema (lists: their first item)."""
    defs = schema.get("$defs", {})
    found: list[tuple[str, object]] = []

    def resolve(node: dict) -> dict:
        for key in ("allOf", "anyOf"):
            for option in node.get(key, []):
                if "$ref" in option:
                    return defs[option["$ref"].split("/")[-1]]
        if "$ref" in node:
            return defs[node["$ref"].split("/")[-1]]
        return node

    def walk(node: dict, path: str) -> None:
        for example in node.get("examples", []):
            found.append((path, example))
        node = resolve(node)
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}.0")
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)

    walk(schema, "")
    return found


def test_every_schema_example_validates_and_plans(tmp_path):
    import unifier

    examples = schema_examples(JobSpec.model_json_schema())
    paths = {path for path, _ in examples}
    assert {"backend_options", "output.report_to", "data.train.0.columns", "adapter.modules_to_save"} <= paths
    for path, example in examples:
        raw = load_recipe()
        raw["output"]["dir"] = str(tmp_path / "run")
        if path.startswith("data.eval."):
            continue  # the same DataSource as data.train.0
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = copy.deepcopy(example)
        spec = spec_from_dict(raw, source=f"schema example for {path}")
        if path.startswith("data."):
            continue  # a column map needs data with those columns; the schema accepts it
        for backend in ("peft", "swift", "unsloth"):
            rendered = json.dumps(unifier.plan(spec, backend=backend).to_json())
            if path == "backend_options":
                for value in example[backend].values():
                    leaf = next(iter(value.values())) if isinstance(value, dict) else value
                    assert json.dumps(leaf) in rendered or str(leaf).lower() in rendered, (backend, path)
