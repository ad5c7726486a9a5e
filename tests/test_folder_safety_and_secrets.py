"""Nothing outside a run's own folder is touched, one writer per folder, no secret in any file, and
trust_remote_code is honoured on every backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unifier.secrets import REDACTED, literal_secrets, redact

from .conftest import FAKE_TOKEN, SECRET_ENV, read_jsonl, run_folder_of, train, unify


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ---- overwrite only what unifier owns ----


def test_overwrite_refuses_a_folder_unifier_did_not_write(tiny_recipe, tmp_path):
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    recipe = tiny_recipe({"output.dir": str(mine), "output.if_exists": "overwrite"})
    assert_user_error(unify("run", str(recipe), "-b", "peft"), "holds files unifier did not write")
    assert (mine / "notes.txt").read_text() == "precious" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt"
    ]


def test_overwrite_refuses_the_current_directory_and_what_holds_the_recipe(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"output.dir": ".", "output.if_exists": "overwrite"})
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.json").write_text(
        json.dumps({"written_by": "unifier", "status": "completed"})
    )  # even a run folder
    (work / "keep.txt").write_text("x")
    result = unify("run", str(recipe), "-b", "peft", cwd=work)
    assert_user_error(result, "holds the current directory")
    assert (work / "keep.txt").exists()
    holder = tiny_recipe({"output.dir": str(tmp_path), "output.if_exists": "overwrite"}, name="inside.yaml")
    (tmp_path / "run.json").write_text(json.dumps({"written_by": "unifier", "status": "completed"}))
    assert_user_error(unify("run", str(holder), "-b", "peft"), "unifier will not overwrite it")
    assert holder.exists()


@pytest.mark.slow
def test_overwrite_keeps_a_resumable_run_and_files_it_did_not_write(tiny_recipe):
    recipe = tiny_recipe({"training.max_steps": 3, "output.if_exists": "overwrite"})
    folder = train(recipe, "peft")
    (folder / "my-notes.txt").write_text("mine")
    record = json.loads((folder / "run.json").read_text())
    record["status"] = "interrupted"  # as a stopped run leaves it: checkpoint-3 is resumable
    (folder / "run.json").write_text(json.dumps(record))
    refused = unify("run", str(recipe), "-b", "peft")
    assert_user_error(refused, "resumable run", "--discard-checkpoints", f"unify resume {folder}")
    assert (folder / "checkpoints" / "checkpoint-3").is_dir()
    again = unify("run", str(recipe), "-b", "peft", "--discard-checkpoints")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (folder / "my-notes.txt").read_text() == "mine"  # overwrite deletes only what unifier wrote
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"


def test_a_second_run_into_the_same_folder_is_refused(tiny_recipe):
    from unifier.runfolder import RunFolder
    from unifier.runlock import RunLock

    recipe = tiny_recipe({"training.max_steps": 2})
    folder = RunFolder(run_folder_of(recipe, "peft"))
    folder.root.mkdir(parents=True)
    with RunLock(folder.lock):  # as a first `unify run` holds it for its whole run
        result = unify("run", str(recipe), "-b", "peft")
    assert_user_error(result, "another unify run is writing this folder", f"pid {os.getpid()} on host")
    assert sorted(p.name for p in folder.root.iterdir()) == [".unifier.lock"]


# ---- secrets ----


def test_redaction_by_key_name_and_value_keeps_legitimate_keys():
    record = {
        "final_metrics": {"tokens_seen": 1234},
        "trainer_args": {
            "include_num_input_tokens_seen": "all",
            "hub_token": "abc",
            "pad_token": "<pad>",
            "wandb_api_key": "k" * 12,
            "hub_model_id": "me/x",
        },
        "argv": ["--hub_token", "secret-value", "--model", "m"],
        "note": f"loaded with {FAKE_TOKEN}",
        "url": "https://user:hunter2@example.com/model",
        "ref": {"hub_token": "${HF_TOKEN}"},
    }
    clean = redact(record)
    assert clean["final_metrics"]["tokens_seen"] == 1234
    assert (
        clean["trainer_args"]["include_num_input_tokens_seen"] == "all"
        and clean["trainer_args"]["pad_token"] == "<pad>"
    )
    assert (
        clean["trainer_args"]["hub_token"] == REDACTED and clean["trainer_args"]["wandb_api_key"] == REDACTED
    )
    assert clean["argv"] == ["--hub_token", REDACTED, "--model", "m"]
    assert FAKE_TOKEN not in json.dumps(clean) and "hunter2" not in clean["url"]
    assert clean["ref"]["hub_token"] == "${HF_TOKEN}"  # a reference is not a secret
    assert literal_secrets({"backend_options": {"peft": {"trainer_args": {"hub_token": "abc"}}}})
    assert not literal_secrets({"backend_options": {"peft": {"trainer_args": {"hub_token": "${HF_TOKEN}"}}}})


def test_literal_secrets_and_url_credentials_in_a_recipe_are_refused(tiny_recipe):
    literal = tiny_recipe({"backend_options": {"peft": {"trainer_args": {"hub_token": FAKE_TOKEN}}}})
    assert_user_error(
        unify("validate", str(literal)), "backend_options.peft.trainer_args.hub_token", "${HF_TOKEN}"
    )
    url = tiny_recipe({"model.name_or_path": "https://user:hunter2@example.com/org/model"}, name="url.yaml")
    result = unify("plan", str(url), "-b", "peft")
    assert_user_error(result, "model.name_or_path", "credentials inside a URL")
    assert "hunter2" not in result.stderr + result.stdout


def every_file_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "swift", "unsloth"])
def test_no_secret_reaches_any_file_of_the_run_folder_or_the_plan(reference_runs, backend):
    """The reference runs pass `hub_token: ${HF_TOKEN}` (peft's trainer arguments, swift's flags) with the token
    set in the environment (tests/conftest.py): neither it nor another secret variable is in any file."""
    recipe = reference_runs.recipe
    planned = unify("plan", str(recipe), "-b", backend, env=SECRET_ENV)
    assert planned.returncode == 0, planned.stderr
    assert FAKE_TOKEN not in planned.stdout
    if backend != "unsloth":
        assert "${HF_TOKEN}" in planned.stdout
    folder = reference_runs.run(backend)
    files = every_file_bytes(folder)
    assert any(
        p.name == "training_args.bin" for p, _ in files
    )  # the checkpoints pickle the trainer arguments
    secrets = [value.encode() for value in SECRET_ENV.values()]
    leaks = [str(p) for p, data in files if any(secret in data for secret in secrets)]
    assert not leaks, leaks
    assert not (folder / "adapter" / "training_args.bin").exists()
    assert FAKE_TOKEN not in reference_runs.terminal[backend]
    record = json.loads((folder / "run.json").read_text())
    assert (
        isinstance(record["final_metrics"]["tokens_seen"], int) and record["final_metrics"]["tokens_seen"] > 0
    )


def test_a_referenced_variable_that_is_not_set_is_refused_before_anything_is_written(tiny_recipe, tmp_path):
    recipe = tiny_recipe(
        {"backend_options": {"peft": {"trainer_args": {"hub_token": "${UNIFIER_TEST_UNSET}"}}}}
    )
    assert_user_error(unify("run", str(recipe), "-b", "peft"), "UNIFIER_TEST_UNSET", "not set")
    assert not (tmp_path / "runs").exists()


# ---- trust_remote_code ----

CUSTOM_CODE = """
import os, pathlib
pathlib.Path(os.environ["UNIFIER_TEST_MARKER"]).write_text("the model folder's code ran")
from transformers import Qwen2Config, Qwen2ForCausalLM


class CustomConfig(Qwen2Config):
    model_type = "qwen2"


class CustomModel(Qwen2ForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture
def custom_code_model(tiny_model_dir, tmp_path):
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(CUSTOM_CODE)
    return folder


@pytest.mark.parametrize("backend", ["peft", "swift", "unsloth"])
def test_untrusted_model_code_never_runs(backend, custom_code_model, tiny_recipe, tmp_path):
    marker = tmp_path / "marker.txt"
    recipe = tiny_recipe({"model.name_or_path": str(custom_code_model), "training.max_steps": 2})
    for command in (
        ["validate", str(recipe), "-b", backend],
        ["plan", str(recipe), "-b", backend],
        ["run", str(recipe), "-b", backend],
    ):
        result = unify(*command, env={"UNIFIER_TEST_MARKER": str(marker)})
        assert_user_error(result, "brings its own Python code", "custom.CustomConfig", "trust_remote_code")
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["peft", "swift", "unsloth"])
def test_trusted_model_code_runs_as_the_recipe_says(backend, custom_code_model, tiny_recipe, tmp_path):
    marker = tmp_path / "marker.txt"
    recipe = tiny_recipe(
        {
            "model.name_or_path": str(custom_code_model),
            "model.trust_remote_code": True,
            "training.max_steps": 2,
        }
    )
    result = unify("run", str(recipe), "-b", backend, env={"UNIFIER_TEST_MARKER": str(marker)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists()


@pytest.mark.slow
def test_the_swift_plugin_stops_ms_swift_from_running_model_code(custom_code_model, tiny_recipe, tmp_path):
    """ms-swift itself loads with trust_remote_code=True: the printed command, run by hand without unifier's
    checks, still refuses the model folder's code because unifier's plugin rides along."""
    from unifier.core import plan
    from unifier.spec import load_spec

    marker = tmp_path / "marker.txt"
    spec = load_spec(
        tiny_recipe(
            {
                "model.name_or_path": str(custom_code_model),
                "model.trust_remote_code": True,
                "training.max_steps": 1,
            }
        )
    )
    program = plan(spec, "swift").program
    argv = list(program.argv)
    index = argv.index("--model_kwargs")
    del argv[index : index + 2]
    (Path(spec.output.dir.format(name=spec.name, backend="swift")) / "data").mkdir(parents=True)
    env = {
        **os.environ,
        **program.env,
        "UNIFIER_TRUST_REMOTE_CODE": "false",
        "UNIFIER_TEST_MARKER": str(marker),
    }
    swift = str(Path(sys.executable).with_name("swift"))
    data = Path(argv[argv.index("--dataset") + 1])
    data.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in read_jsonl(Path(__file__).parents[1] / "unifier" / "assets" / "tiny_chat.jsonl")
        )
    )
    result = subprocess.run([swift, *argv[1:]], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and not marker.exists(), result.stderr[-3000:]
    assert "model.trust_remote_code is false" in result.stderr
