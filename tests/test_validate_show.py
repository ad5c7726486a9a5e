"""`unify validate --show N` (issue 14): rows rendered as the trainer sees them, the loss mask made visible."""

from __future__ import annotations

import json
import re

from unifier.builtin import ASSETS

from .conftest import unify


def marked(text: str) -> list[str]:
    return re.findall(r"\[\[(.*?)\]\]", text, flags=re.S)


def test_show_marks_the_assistant_answer_only(tiny_recipe):
    recipe = tiny_recipe({"data.shuffle": False})
    result = unify("validate", str(recipe), "--show", "2")
    assert result.returncode == 0, result.stderr
    first = json.loads((ASSETS / "tiny_chat.jsonl").read_text().splitlines()[0])
    answer = first["messages"][-1]["content"]
    assert "sample 1 (" in result.stdout and "sample 3 (" not in result.stdout
    spans = marked(result.stdout)
    assert spans[0] == f"{answer}<|im_end|>\n"  # the answer and its end-of-turn token, nothing of the prompt
    assert first["messages"][0]["content"] in result.stdout  # the prompt is shown, unmarked
    assert len(spans) == 2


def test_show_marks_everything_without_assistant_only_loss_and_cuts_at_max_length(tiny_recipe):
    recipe = tiny_recipe(
        {"data.shuffle": False, "data.assistant_only_loss": False, "model.max_seq_length": 12}
    )
    result = unify("validate", str(recipe), "--show", "1")
    assert result.returncode == 0, result.stderr
    header = re.search(
        r"sample 1 \(.*\): (\d+) tokens, (\d+) trained, (\d+) cut at max_seq_length", result.stdout
    )
    assert header and int(header.group(2)) == 12 and int(header.group(1)) == 12 + int(header.group(3))
    assert marked(result.stdout)[0].startswith("<|im_start|>")


def test_show_marks_the_chosen_answer_of_a_preference_pair(tiny_recipe):
    recipe = tiny_recipe(
        {
            "data.shuffle": False,
            "data.train": [{"path": "builtin:tiny-preference", "format": "preference"}],
            "training.method": "dpo",
        }
    )
    result = unify("validate", str(recipe), "--show", "1")
    assert result.returncode == 0, result.stderr
    first = json.loads((ASSETS / "tiny_preference.jsonl").read_text().splitlines()[0])
    assert marked(result.stdout)[0].startswith(first["chosen"][0]["content"])


def test_validate_counts_optimizer_steps_with_accumulation_and_processes(tiny_recipe):
    """training.max_steps counts optimizer steps: validate's steps per pass divide the rows by batch x
    gradient accumulation x processes (68 bundled rows at 4 x 4: 5 steps, not 17)."""
    result = unify("validate", str(tiny_recipe({"training.gradient_accumulation_steps": 4})))
    assert result.returncode == 0, result.stderr
    assert "5 optimizer steps per pass at batch 4 x accumulation 4" in result.stdout
