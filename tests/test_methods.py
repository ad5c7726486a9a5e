"""Training methods beyond SFT (unifier/methods.py): the method table, each method's options section, GRPO's
prompts and reward functions, and what a new user gets wrong with them (exit 2, naming the field or file:row).
The trainings themselves are the shared scenarios (tests/parity: orpo_runs, simpo_runs, grpo_runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from unifier import methods
from unifier.spec import JobSpec

from .conftest import RECIPES, load_recipe, unify


def grpo_recipe(folder: Path, changes: dict | None = None, rows: list[dict] | None = None) -> Path:
    raw = load_recipe("tiny-cpu-grpo.yaml")
    raw["output"]["dir"] = str(folder / "runs" / "{name}-{backend}")
    (folder / "tiny_rewards.py").write_text((RECIPES / "tiny_rewards.py").read_text())
    if rows is not None:
        data = folder / "prompts.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        raw["data"]["train"] = [{"path": str(data)}]
    for dotted, value in (changes or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def refused(result, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-2000:])


def test_every_method_has_one_training_section_and_a_backend():
    from unifier.backends.registry import active

    from unifier.spec.training import VARIANTS

    assert set(VARIANTS) == set(methods.METHODS)
    runs_somewhere = {name for b in active().names() for name in active().backend(b).capabilities.methods}
    assert runs_somewhere == set(methods.METHODS)
    for name, entry in methods.METHODS.items():
        assert entry.data_kinds and entry.trl_config.count(":") == 1 and entry.trl_trainer.count(":") == 1
        options = VARIANTS[name].model_fields.get(name)
        assert (options is None) == (name == "sft"), name  # every method but SFT has its options section


def test_the_grpo_recipe_validates_and_plans_on_every_backend(tmp_path):
    recipe = grpo_recipe(tmp_path)
    checked = unify("validate", str(recipe))
    assert checked.returncode == 0, checked.stderr
    assert "prompts: 32 per pass, each answered 8 times" in checked.stdout
    assert "16 optimizer steps per pass" in checked.stdout  # 2 prompts x 8 answers per step
    for backend in ("peft", "swift", "unsloth"):
        planned = unify("plan", str(recipe), "--backend", backend)
        assert planned.returncode == 0, (backend, planned.stderr)
        assert str(tmp_path / "tiny_rewards.py") in planned.stdout  # the resolved file, as it will be loaded
    swift = unify("plan", str(recipe), "--backend", "swift").stdout
    for flag in ("--rlhf_type grpo", "--reward_funcs exact_answer digits", "--temperature 1.0", "--beta 0.0"):
        assert flag in swift, flag


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"training.grpo.rewards": ["missing.py:score"]},
            ["training.grpo.rewards[0]", "missing.py not found"],
        ),
        (
            {"training.grpo.rewards": ["tiny_rewards.py:nope"]},
            ["defines no top-level function 'nope'", "digits"],
        ),
        ({"training.grpo.rewards": ["exactanswer"]}, ["rewards[0] 'exactanswer'", "exact_answer"]),
        ({"training.grpo.reward_weights": [1.0]}, ["reward_weights has 1 values for 2 rewards"]),
        ({"training.per_device_batch_size": 6}, ["make that a multiple of grpo.num_generations"]),
        ({"training.grpo.max_completion_length": 300}, ["leaves no room for the prompt"]),
        ({"training.method": "sft"}, ["'grpo' holds the options of method grpo", "training.method: grpo"]),
        ({"training.grpo": None}, ["training.grpo"]),
    ],
)
def test_grpo_recipe_mistakes_exit_2_naming_the_field(tmp_path, changes, fragments):
    refused(unify("validate", str(grpo_recipe(tmp_path, changes))), *fragments)


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        ([{"prompt": "What is 1 + 1?"}], ["prompts.jsonl:1", "'answer' column", "drop exact_answer"]),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                    "answer": "x",
                }
            ],
            ["prompts.jsonl:1", "ends with an assistant turn"],
        ),
        ([{"prompt": "Q?", "answer": "1", "completions": "x"}], ["'completions' clashes"]),
        ([{"prompt": "", "answer": "1"}], ["'prompt' is empty"]),
    ],
)
def test_bad_prompt_rows_exit_2_naming_the_row(tmp_path, rows, fragments):
    refused(unify("validate", str(grpo_recipe(tmp_path, rows=rows))), *fragments)


def test_preference_methods_refuse_chat_rows_with_the_fix():
    raw = load_recipe("tiny-cpu-sft.yaml")
    raw["training"]["method"] = "orpo"
    spec = JobSpec.model_validate(raw)
    assert spec.training.orpo.beta == 0.1  # the method's options section, with its defaults
    from unifier.data.prepare import prepare_data
    from unifier.errors import UserError

    with pytest.raises(UserError) as caught:
        prepare_data(spec, read_hub=False)
    assert "needs preference data" in str(caught.value) and "preference pairs" in (caught.value.hint or "")


@pytest.mark.slow
def test_a_reward_function_that_raises_fails_the_run_naming_it(tmp_path):
    (tmp_path / "broken.py").write_text(
        "def score(prompts, completions, **columns):\n    raise KeyError('oops')\n"
    )
    recipe = grpo_recipe(tmp_path, {"training.grpo.rewards": ["broken.py:score"], "training.max_steps": 2})
    result = unify("run", str(recipe), "--backend", "peft")
    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads((tmp_path / "runs" / "tiny-cpu-grpo-peft" / "run.json").read_text())
    assert record["status"] == "failed"
    assert f"reward function {tmp_path / 'broken.py'}:score raised KeyError" in json.dumps(record)


def test_switching_a_recipes_method_names_the_section_to_drop():
    dpo = str(RECIPES / "tiny-cpu-dpo.yaml")
    kept = unify("validate", dpo, "--set", "training.method=orpo")
    refused(kept, "'dpo' holds the options of method dpo", "--set training.dpo=null")
    switched = unify("validate", dpo, "--set", "training.method=orpo", "--set", "training.dpo=null")
    assert switched.returncode == 0 and "(lora, orpo)" in switched.stdout, switched.stderr
    refused(unify("validate", dpo, "--set", "training.method=ppo"), "training.method must be one of sft, dpo")


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (  # the same file by two spellings, or a built-in and a function of the same name
            {"training.grpo.rewards": ["tiny_rewards.py:digits", "./tiny_rewards.py:digits"]},
            ["two rewards are named 'digits'"],
        ),
        ({"training.grpo.rewards": ["format", "tiny_rewards.py:format"]}, ["two rewards are named 'format'"]),
        ({"training.grpo.reward_weights": [True, 1.0]}, ["not true/false"]),
        ({"training.grpo.reward_weights": [0, 0]}, ["every weight is 0"]),
    ],
)
def test_more_grpo_mistakes_exit_2(tmp_path, changes, fragments):
    recipe = grpo_recipe(tmp_path, changes)
    (tmp_path / "tiny_rewards.py").write_text(
        (RECIPES / "tiny_rewards.py").read_text()
        + "\n\ndef format(prompts, completions, **columns):\n    return [0.0]\n"
    )
    refused(unify("validate", str(recipe)), *fragments)


def test_a_reward_file_in_a_folder_with_a_colon_and_a_bad_signature(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    checked = unify("validate", str(grpo_recipe(folder)))
    assert checked.returncode == 0, checked.stderr  # the last colon splits file and function
    (folder / "bad.py").write_text("def score(x):\n    return [0.0]\n")
    refused(
        unify("validate", str(grpo_recipe(folder, {"training.grpo.rewards": ["bad.py:score"]}))),
        "cannot take the reward arguments",
        "def score(prompts, completions, **columns)",
    )


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        ([{"prompt": [{"role": "user"}], "answer": "1"}], ["prompt[0].content must be text"]),
        ([{"prompt": [{"role": "robot", "content": "hi"}], "answer": "1"}], ["prompt[0].role is 'robot'"]),
        ([{"prompt": "Q?", "answer": "1", "system": 5}], ["'system' must be text"]),
    ],
)
def test_prompt_messages_are_checked_like_chat_rows(tmp_path, rows, fragments):
    refused(unify("validate", str(grpo_recipe(tmp_path, rows=rows))), *fragments)


def test_a_prompt_without_room_for_its_completion_is_named(tmp_path):
    recipe = grpo_recipe(tmp_path, {"model.max_seq_length": 40, "training.grpo.max_completion_length": 4})
    refused(unify("validate", str(recipe)), "tiny_prompts.jsonl:", "exceeds model.max_seq_length 40")


@pytest.mark.parametrize(
    ("recipe", "changes", "fragment"),
    [
        ("tiny-cpu-orpo.yaml", ["data.packing=true"], "which no backend packs"),
        (
            "tiny-cpu-reward.yaml",
            ["eval.after_training=true", "eval.retain=[builtin:tiny-retain]"],
            "a reward model writes no text",
        ),
    ],
)
def test_settings_a_method_cannot_use_are_refused(recipe, changes, fragment):
    sets = [part for change in changes for part in ("--set", change)]
    refused(unify("validate", str(RECIPES / recipe), *sets), fragment)


def test_reward_columns_keep_their_own_values_on_every_row():
    """GRPO columns reach the rewards as each row wrote them (JSON per row, not Arrow-typed columns)."""
    from unifier.backends.inline_library import reward_columns

    rows = [
        json.dumps({"answer": 2, "hint": "x"}),
        json.dumps({"answer": 1.5}),
        json.dumps({"answer": "yes"}),
    ]
    assert reward_columns(rows) == {"answer": [2, 1.5, "yes"], "hint": ["x", None, None]}


def test_grpo_and_reward_runs_may_evaluate_after_training(tmp_path):
    """GRPO's held-out prompts (rewards of greedy answers) and a reward model's held-out pairs (its score head)
    are what `unify eval` scores for them, so eval.after_training with held-out data validates."""
    checked = unify(
        "validate", str(grpo_recipe(tmp_path, {"data.eval_split": 0.25, "eval.after_training": True}))
    )
    assert checked.returncode == 0, checked.stderr
    sets = ("--set", "eval.after_training=true")
    checked = unify("validate", str(RECIPES / "tiny-cpu-reward.yaml"), *sets, "--no-tokens")
    assert checked.returncode == 0, checked.stderr


def test_compare_shows_the_method_scores_of_evaluated_runs(tmp_path):
    """unify compare's eval table reads GRPO's held-out reward and a reward model's pair accuracy from eval.json."""
    from unifier.compare import _eval_summary
    from unifier.runfolder import RunFolder

    grpo, reward = RunFolder(tmp_path / "grpo"), RunFolder(tmp_path / "reward")
    for folder, report in (
        (grpo, {"rewards": {"base": {"reward": 0.25}, "tuned": {"reward": 0.75}, "change": 0.5}}),
        (reward, {"pairs": {"tuned": {"pair_accuracy": 0.6, "margin": 0.1, "loss": 0.6, "pairs": 5}}}),
    ):
        folder.evaluation.mkdir(parents=True)
        (folder.evaluation / "eval.json").write_text(
            json.dumps({"settings": {"data": ["held.jsonl"]}, **report})
        )
    assert _eval_summary(grpo) == {"data": ["held.jsonl"], "reward": {"base": 0.25, "tuned": 0.75}}
    assert _eval_summary(reward) == {"data": ["held.jsonl"], "pair_accuracy": 0.6}
