"""Bad input: a clear message naming the field or file:row, exit code 2, and no run folder."""

import json
import subprocess
import sys

import pytest

from .conftest import unify


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_unknown_key(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"training.learnin_rate": 0.1})
    result = unify("run", str(recipe), "--backend", "peft")
    assert_user_error(result, "training", "did you mean 'learning_rate'")
    assert not (tmp_path / "runs").exists()


def test_wrong_type_from_set_override(tiny_recipe, tmp_path):
    result = unify("run", str(tiny_recipe()), "--backend", "peft", "--set", "training.max_steps=many")
    assert_user_error(result, "training.max_steps", "'many'")
    assert not (tmp_path / "runs").exists()


def test_contradictory_settings(tiny_recipe):
    assert_user_error(unify("validate", str(tiny_recipe({"adapter.type": "qlora"}))), "quantization.bits: 4")


def test_missing_recipe_and_missing_data_file(tiny_recipe, tmp_path):
    assert_user_error(unify("validate", str(tmp_path / "nope.yaml")), "recipe file not found")
    recipe = tiny_recipe({"data.train": [{"path": "missing.jsonl"}]})
    assert_user_error(unify("run", str(recipe), "-b", "peft"), "missing.jsonl: data file not found")
    assert not (tmp_path / "runs").exists()


def test_malformed_row_names_file_and_row(tiny_recipe, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": 3}]})
        + "\n"
    )
    recipe = tiny_recipe({"data.train": [{"path": str(data)}]})
    assert_user_error(unify("run", str(recipe), "-b", "peft"), f"{data}:2:")
    assert not (tmp_path / "runs").exists()


def test_invalid_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: [unclosed\n")
    assert_user_error(unify("validate", str(recipe)), "not valid YAML")


def test_unsupported_feature_for_backend(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"compute.nproc_per_node": 2})
    assert_user_error(unify("run", str(recipe), "-b", "unsloth"), "use the swift or peft backend")
    assert not (tmp_path / "runs").exists()


def test_existing_run_folder_is_not_overwritten_by_default(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"output.if_exists": "error"})
    folder = tmp_path / "runs" / "tiny-cpu-sft-peft"
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("x")
    assert_user_error(unify("run", str(recipe), "-b", "peft"), "run folder already exists")
    assert (folder / "keep.txt").exists()


def test_unknown_backend(tiny_recipe):
    assert_user_error(unify("plan", str(tiny_recipe()), "--backend", "axolotl"), "unknown backend 'axolotl'")


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["validate", "RECIPE", "--no-tokens"],
        ["plan", "RECIPE", "-b", "swift"],
        ["plan", "RECIPE", "-b", "peft"],
        ["plan", "RECIPE", "-b", "unsloth"],
        ["validate", "RECIPE", "-b", "unsloth", "--no-tokens"],
        ["backends"],
        ["schema"],
    ],
)
def test_light_commands_import_no_torch(tiny_recipe, command):
    recipe = str(tiny_recipe())
    args = [recipe if a == "RECIPE" else a for a in command]
    probe = (
        "import sys\nfrom unifier.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'swift', 'unsloth', 'datasets') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\nsys.exit(code or 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout[-500:]


def test_validate_counts_tokens_without_torch(tiny_recipe, tiny_model_dir):
    """Token statistics read tokenizer.json with `tokenizers` and render with jinja2 (unifier/data/chat_render.py):
    no torch, no transformers, no trainer library."""
    probe = (
        "import sys\nfrom unifier.cli import app\n"
        f"try:\n    app(['validate', {str(tiny_recipe())!r}])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'swift', 'unsloth', 'datasets') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\nsys.exit(code or 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout and "tokens per row: min" in result.stdout, result.stdout[-800:]


def test_init_writes_a_valid_starter_recipe_and_never_overwrites_silently(tmp_path):
    target = tmp_path / "recipe.yaml"
    assert unify("init", str(target)).returncode == 0
    assert unify("validate", str(target)).returncode == 0
    target.write_text("# mine\n")
    assert_user_error(unify("init", str(target)), "already exists", "--force")
    assert target.read_text() == "# mine\n"
    assert (
        unify("init", str(target), "--force").returncode == 0 and "builtin:tiny-qwen2" in target.read_text()
    )
