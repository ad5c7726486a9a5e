"""What `unify eval` scores for the methods whose data has no answer to compute a loss on.

GRPO: the model answers each held-out prompt greedily from unifier's own prompt tokens (what training generated
from), up to the run's grpo.max_completion_length, and the run's reward functions score the answers with the
rows' columns, exactly as training called them (backends/inline_library.py: load_rewards); base vs tuned.
A reward model: its score head ranks each held-out chosen answer against its rejected one (prompt + answer
tokens, as training scored them); the tuned model only, as the base has no trained score head.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UserError


def check_reward_files(run) -> None:
    """A GRPO run's own reward files must still be where the run loaded them from."""
    for name in run.spec.training.grpo.rewards:
        file, _, function = name.rpartition(":")
        if file and not Path(file).is_file():
            raise UserError(
                f"training.grpo.rewards: {file} (the run's reward function {function}) is no longer there",
                hint="put the file back where the run loaded it from: eval scores with the run's own rewards",
            )


def held_out_rewards(model, tokenizer, run, rows: list[dict]) -> tuple[dict[str, Any], list[dict]]:
    """(mean rewards, one {completion, reward} per row) of greedy answers to the prompt rows."""
    from .backends.inline_library import load_rewards, reward_columns
    from .backends.trl_config import reward_entries
    from .evaluation import run_encoder

    grpo = run.spec.training.grpo
    encoder = run_encoder(tokenizer, run)
    completions, lengths = [], []
    for row in rows:
        prompt_ids = encoder.encode("prompt", row).layout["prompt_ids"]
        text, length = _greedy_answer(model, tokenizer, prompt_ids, grpo.max_completion_length)
        completions.append(text)
        lengths.append(length)
    prompts = [row["prompt"] for row in rows]
    columns = reward_columns([json.dumps(row["columns"]) for row in rows])
    weights = grpo.reward_weights or [1.0] * len(grpo.rewards)
    means: dict[str, Any] = {}
    totals = [0.0] * len(rows)
    for (name, score), weight in zip(
        load_rewards(reward_entries(grpo.rewards), grpo.max_completion_length), weights
    ):
        try:
            values = score(prompts, completions, lengths, columns)
        except Exception as exc:  # the user's function (or exact_answer without an answer column)
            raise UserError(
                f"scoring the held-out prompts: {exc}",
                hint="eval calls the run's reward functions as training did, on the rows given (--data)",
            ) from None
        scored = [v for v in values if v is not None]
        means[f"rewards/{name}/mean"] = sum(scored) / len(scored) if scored else None
        totals = [t + weight * v if v is not None else t for t, v in zip(totals, values)]
    means = {
        "reward": sum(totals) / len(totals),
        **means,
        "completions/mean_length": sum(lengths) / len(lengths),
        "prompts": len(rows),
    }
    return means, [{"completion": c, "reward": t} for c, t in zip(completions, totals)]


def _greedy_answer(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> tuple[str, int]:
    """The answer's text (special tokens dropped, as trl decodes completions) and its length in tokens up to and
    including the first end-of-turn token (what the length reward counts)."""
    import torch

    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops] if stops is not None else [])
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stops) or None,
            pad_token_id=tokenizer.pad_token_id,
        )
    answer = out[0, len(prompt_ids) :].tolist()
    end = next((i + 1 for i, token in enumerate(answer) if token in stops), len(answer))
    return tokenizer.decode(answer[:end], skip_special_tokens=True), end


def load_score_model(run):
    """(model, tokenizer) of a reward-model run: the base with a one-label score head, its adapter (which holds
    the trained head) or its full weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    m = run.spec.model
    location = str(run.weights) if not run.is_adapter else run.base
    tokenizer = AutoTokenizer.from_pretrained(
        location, revision=m.revision, trust_remote_code=m.trust_remote_code
    )
    template = run.chat_template()
    if template:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, m.dtype) if device == "cuda" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(
        location, num_labels=1, revision=m.revision, trust_remote_code=m.trust_remote_code, dtype=dtype
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if run.is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.weights))
    return model.to(device).eval(), tokenizer


def score_pairs(model, tokenizer, run, rows: list[dict]) -> dict[str, Any]:
    """How often the score head ranks the chosen answer above the rejected one, the mean score margin and the
    pairwise loss (trl's RewardTrainer accuracy, margin and loss without center_coefficient, on held-out pairs)."""
    import torch

    from .evaluation import run_encoder

    encoder = run_encoder(tokenizer, run)

    def score(ids: list[int]) -> float:
        with torch.no_grad():
            return float(model(input_ids=torch.tensor([ids], device=model.device)).logits[0, 0])

    margins = []
    for row in rows:
        pair = encoder.encode("preference", row).layout
        chosen = score(pair["prompt_ids"] + pair["chosen_ids"])
        rejected = score(pair["prompt_ids"] + pair["rejected_ids"])
        if not (math.isfinite(chosen) and math.isfinite(rejected)):
            raise UserError(
                f"{run.folder.root}: the score head gave {chosen} / {rejected}: the weights are broken"
            )
        margins.append(chosen - rejected)
    return {
        "pair_accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
        "loss": sum(_softplus(-m) for m in margins) / len(margins),  # -log sigmoid(margin): the trained loss
        "pairs": len(margins),
    }


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
