"""KTO: unpaired answers with a label, unifier's KL pairing, trl's KTO trainer on unifier's tokens (peft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from unifier.data.formats import RowError, detect_format, to_canonical
from unifier.data.tokens import with_kl_completions
from unifier.spec import JobSpec

from .conftest import load_recipe, unify
from .test_methods import refused

USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris."}


def kto_recipe(folder: Path, rows: list[dict] | None = None, **changes) -> Path:
    raw = load_recipe("tiny-cpu-kto.yaml")
    raw["output"]["dir"] = str(folder / "runs" / "{name}-{backend}")
    if rows is not None:
        data = folder / "answers.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        raw["data"]["train"] = [{"path": str(data)}]
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": USER["content"], "completion": ANSWER["content"], "label": True},  # trl's text layout
        {"prompt": [USER], "completion": [ANSWER], "label": True},  # trl's conversational layout
        {"messages": [USER, ANSWER], "label": True},  # ms-swift's and LLaMA-Factory's
        {
            "conversations": [
                {"from": "human", "value": USER["content"]},
                {"from": "gpt", "value": "Paris."},
            ],
            "label": 1,
        },
    ],
)
def test_every_unpaired_layout_reads_as_one_canonical_row(row):
    assert detect_format(row) == "unpaired"
    assert to_canonical("unpaired", row, {}) == {"prompt": [USER], "completion": [ANSWER], "label": True}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"messages": [USER, ANSWER]}, "'label' must be true (a desirable answer) or false"),
        ({"messages": [USER, ANSWER], "label": "yes"}, "got 'yes'"),
        ({"messages": [USER, ANSWER], "label": 2}, "got 2"),
        ({"messages": [USER], "label": True}, "must end with the assistant answer"),
        ({"messages": [ANSWER], "label": True}, "needs a prompt before it"),
        ({"completion": "Paris.", "label": False}, "needs the 'prompt'"),
        ({"prompt": [USER], "completion": [USER, ANSWER], "label": False}, "the assistant's answer only"),
        ({"prompt": "Q", "messages": [USER, ANSWER], "label": False}, "'prompt' beside 'messages'"),
        ({"label": True}, "no answer: give 'prompt' + 'completion'"),
        ({"prompt": "Q", "label": True}, "'prompt' needs a 'completion'"),
        ({"messages": [USER, ANSWER], "conversations": [], "label": True}, "give the conversation once"),
    ],
)
def test_bad_unpaired_rows_say_what_is_wrong(row, fragment):
    with pytest.raises(RowError) as caught:
        to_canonical("unpaired", row, {})
    assert fragment in str(caught.value)


def test_kl_answers_rotate_within_each_forward_pass_and_fit_the_prompt():
    rows = [{"prompt_ids": [1] * p, "completion_ids": [10 + i] * 4} for i, p in enumerate((2, 2, 2, 7, 2))]
    paired = with_kl_completions(rows, group=2, max_len=9)
    # passes [0, 1], [2, 3], [4]: each row takes the answer of the row before it in its pass (the first the last)
    assert [r["kl_completion_ids"] for r in paired] == [[11] * 4, [10] * 4, [13] * 4, [12] * 2, [14] * 4]
    assert all("kl_completion_ids" not in r for r in rows)  # the encoded rows are not changed


def test_kto_needs_two_rows_per_forward_pass_for_its_kl_estimate(tmp_path):
    refused(
        unify("validate", str(kto_recipe(tmp_path, training__per_device_batch_size=1))),
        "training.per_device_batch_size must be at least 2 for KTO",
        "apo_zero_unpaired",
    )
    raw = load_recipe("tiny-cpu-kto.yaml")
    raw["training"]["per_device_batch_size"] = 1
    raw["training"]["kto"]["loss_type"] = "apo_zero_unpaired"  # no KL term: one row per pass is fine
    assert JobSpec.model_validate(raw).training.kto.loss_type == "apo_zero_unpaired"


def test_kto_validates_and_plans_on_every_backend_with_the_same_options(tmp_path):
    recipe = str(kto_recipe(tmp_path))
    result = unify("validate", recipe)
    assert result.returncode == 0, result.stderr
    assert "unpaired" in result.stdout and "-> peft" in result.stdout
    on_unsloth = unify("plan", recipe, "--backend", "unsloth", "--json")
    assert on_unsloth.returncode == 0, on_unsloth.stderr
    swift = unify("plan", recipe, "--backend", "swift")
    assert swift.returncode == 0, swift.stderr
    for flag in ("--rlhf_type kto", "--beta 0.1", "--desirable_weight 1.0", "--undesirable_weight 1.0"):
        assert flag in swift.stdout, flag
    for plan in (unify("plan", recipe, "--backend", "peft", "--json"), on_unsloth):
        assert plan.returncode == 0, plan.stderr
        args = json.loads(plan.stdout)["program"]["config"]["trainer_args"]
        assert {k: args[k] for k in ("beta", "desirable_weight", "undesirable_weight", "loss_type")} == {
            "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0, "loss_type": "kto",
        }  # fmt: skip


def test_a_kto_starter_recipe_validates_and_null_options_mean_the_defaults(tmp_path):
    result = unify("init", "--method", "kto", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checked = unify("validate", "recipe.yaml", "--set", "training.kto=null", cwd=tmp_path)
    assert checked.returncode == 0 and "(lora, kto)" in checked.stdout and "unpaired" in checked.stdout, (
        checked.stderr
    )
    assert "path: builtin:tiny-kto" in (tmp_path / "recipe.yaml").read_text()


def test_llamafactory_kto_imports_its_weights_and_its_kto_tag(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "kto.json").write_text(json.dumps([{"messages": [USER, ANSWER], "tag": False}]))
    (tmp_path / "data" / "dataset_info.json").write_text(
        json.dumps(
            {
                "kto_demo": {
                    "file_name": "kto.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages", "kto_tag": "tag"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                    },
                }
            }
        )
    )
    config = {
        "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct",
        "stage": "kto",
        "do_train": True,
        "finetuning_type": "lora",
        "dataset": "kto_demo",
        "dataset_dir": str(tmp_path / "data"),
        "template": "qwen",
        "pref_beta": 0.2,
        "kto_rejected_weight": 1.2,
        "per_device_train_batch_size": 2,
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "lf.yaml").write_text(yaml.safe_dump(config))
    result = unify(
        "import", str(tmp_path / "lf.yaml"), "--from", "llamafactory", "--output", str(tmp_path / "r.yaml")
    )
    assert result.returncode == 0, result.stderr
    recipe = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert recipe["training"]["method"] == "kto"
    assert recipe["training"]["kto"] == {"beta": 0.2, "desirable_weight": 1.0, "undesirable_weight": 1.2}
    (source,) = recipe["data"]["train"]
    assert source["format"] == "unpaired" and source["columns"] == {"label": "tag"}


@pytest.mark.slow
def test_kto_on_peft_trains_unifiers_tokens_and_kl_pairs(tmp_path):
    """recipes/tiny-cpu-kto.yaml on peft: trl's KTO trainer reads unifier's prompt/answer tokens and its KL
    pairing (the probe's first batch is the tokens file's first rows), and logs KTO's numbers."""
    recipe = kto_recipe(tmp_path, training__max_steps=8, output__probe=True)
    result = unify("run", str(recipe), "--backend", "peft", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "runs" / "tiny-cpu-kto-peft"
    rows = [json.loads(line) for line in (folder / "data" / "train.tokens.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (folder / "probe" / "samples.jsonl").read_text().splitlines()]
    for row, sample in zip(rows, samples):
        prompt = row["prompt_ids"]
        assert sample["completion_input_ids"] == prompt + row["completion_ids"]
        assert sample["completion_labels"] == [-100] * len(prompt) + row["completion_ids"]
        assert sample["KL_completion_input_ids"] == prompt + row["kl_completion_ids"]
    assert rows[1]["kl_completion_ids"] == rows[0]["completion_ids"]  # the row before it in the pass
    assert rows[0]["kl_completion_ids"] == rows[3]["completion_ids"]  # per_device_batch_size 4
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("loss") is not None]
    assert len(steps) == 8
    assert steps[0]["loss"] == pytest.approx(0.5)  # policy = reference: 1 - sigmoid(0) on every answer
    assert any(m["kl"] > 0 for m in steps)  # the KL estimate is computed (and clamped at 0)
    assert all("rewards/chosen" in m or "rewards/rejected" in m for m in steps)
    assert all(m["tokens_seen"] for m in steps)


def answer(label: bool, n: int = 0) -> dict:
    good, bad = ("Paris", "Madrid") if n % 2 else ("Rome", "Oslo")
    city = "France" if n % 2 else "Italy"
    return {"prompt": f"Capital of {city}?", "completion": f"It is {good if label else bad}.", "label": label}


@pytest.mark.parametrize(
    ("labels", "changes", "fragments"),
    [
        ([True] * 6, {}, ["all 6 KTO answers are desirable (label true)", "add undesirable answers"]),
        ([False] * 6, {}, ["all 6 KTO answers are undesirable (label false)", "add desirable answers"]),
        (  # trl's balance check (KTO paper Eq. 8), which trl only logs
            [True] * 8 + [False] * 2,
            {},
            ["8 desirable and 2 undesirable KTO answers", "desirable_weight in [0.25, 0.33]"],
        ),
        ([True, False, True], {}, ["3 KTO rows, fewer than one forward pass", "= 4"]),
        ([True], {"training__kto__loss_type": "apo_zero_unpaired"}, ["this one row, whose KL estimate"]),
    ],
)
def test_kto_data_that_trains_but_not_as_meant_is_warned_about(tmp_path, labels, changes, fragments):
    rows = [answer(label, n) for n, label in enumerate(labels)]
    result = unify("validate", str(kto_recipe(tmp_path, rows, data__eval_split=0.0, **changes)))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    for fragment in fragments:
        assert fragment in said, (fragment, said[-2000:])


def test_balanced_kto_data_or_weights_that_balance_it_give_no_warning(tmp_path):
    skewed = [answer(True, n) for n in range(8)] + [answer(False, n) for n in range(2)]
    for rows, changes in (
        ([answer(n % 2 == 0, n) for n in range(8)], {}),
        (skewed, {"training__kto__desirable_weight": 0.3}),
    ):
        result = unify("validate", str(kto_recipe(tmp_path, rows, data__eval_split=0.0, **changes)))
        assert result.returncode == 0 and "KTO" not in result.stdout.replace("(lora, kto)", ""), result.stdout
