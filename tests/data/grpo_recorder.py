"""A GRPO reward function for the tests: it scores like recipes/tiny_rewards.py's digits and records what it
was given (prompts, completions, the rows' columns) in $UNIFIER_TEST_REWARD_LOG.<backend>.jsonl, so the
tests can check that every backend calls rewards with the same arguments."""

import json
import os
import sys


def recorded(prompts, completions, answer, **columns):
    backend = "unsloth" if "unsloth" in sys.modules else "swift" if "swift" in sys.modules else "peft"
    scores = [
        sum(ch.isdigit() for ch in text.strip()) / len(text.strip()) if text.strip() else 0.0
        for text in completions
    ]
    record = {
        "prompts": prompts,
        "completions": completions,
        "answer": answer,
        "other": sorted(columns),
        "scores": scores,
    }
    with open(f"{os.environ['UNIFIER_TEST_REWARD_LOG']}.{backend}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return scores
