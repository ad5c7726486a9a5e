"""`unify eval RUN_DIR`: did the model get better at the task, and did it forget what it knew?

Held-out loss and perplexity of the tuned model and of its base on the same rows (the run's eval data, or
files given), on the tokens training would put loss on (the recipe's chat template and assistant-only mask;
all tokens of raw text; the chosen answer of a preference pair); the same two numbers on a retain set that is
not the training task (a forgetting check: the tuned model's retain loss may rise by at most
`max_retain_increase`, relative); and greedy answers of base and tuned for the first prompts next to the
reference. Written to RUN_DIR/eval/ (eval.json, samples.jsonl, eval.png) through a temporary folder, so eval/
is complete or absent.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from .errors import UserError
from .trained import TrainedRun, generate, load_model

DEFAULT_MAX_RETAIN_INCREASE = 0.10


def evaluate(
    run_dir: str | Path,
    *,
    data: list[str] | None = None,
    retain: list[str] | None = None,
    samples: int = 3,
    max_new_tokens: int = 48,
    max_retain_increase: float = DEFAULT_MAX_RETAIN_INCREASE,
) -> dict[str, Any]:
    """The report (also written to RUN_DIR/eval/eval.json)."""
    run = TrainedRun.open(run_dir)
    task_rows = _rows(run, data, "eval")
    retain_rows = _rows(run, retain, "retain") if retain else None
    report: dict[str, Any] = {
        "run": str(run.folder.root),
        "backend": run.record.get("backend"),
        "settings": {
            "data": data or [str(run.folder.data_file("eval"))],
            "retain": retain,
            "samples": samples,
            "max_new_tokens": max_new_tokens,
            "max_seq_length": run.spec.model.max_seq_length,
            "decoding": "greedy",
            "max_retain_increase": max_retain_increase,
        },
    }
    written_samples: list[dict] = []
    for which in ("base", "tuned"):
        model, tokenizer = load_model(run, tuned=which == "tuned")
        report.setdefault("task", {})[which] = held_out_loss(model, tokenizer, run, task_rows)
        if task_rows and "chosen" in task_rows[0]:
            report["task"][which].update(preference_scores(model, tokenizer, run, task_rows))
        if retain_rows is not None:
            report.setdefault("retain", {})[which] = held_out_loss(model, tokenizer, run, retain_rows)
        for index, row in enumerate(task_rows[:samples]):
            prompt, reference = _prompt_and_reference(row)
            if prompt is None:
                continue
            if which == "base":
                written_samples.append({"prompt": prompt, "reference": reference})
            written_samples[index][which] = generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
        del model
    task = report["task"]
    task["loss_change"] = task["tuned"]["loss"] - task["base"]["loss"]
    if retain_rows is not None:
        base, tuned = report["retain"]["base"]["loss"], report["retain"]["tuned"]["loss"]
        increase = (tuned - base) / base if base else 0.0
        report["retain"]["relative_increase"] = increase
        report["retain"]["forgetting"] = increase > max_retain_increase
    _write(run, report, written_samples)
    return report


def held_out_loss(model, tokenizer, run: TrainedRun, rows: list[dict]) -> dict[str, float]:
    """Mean loss per trained token (and its perplexity) over rows, one row at a time (no padding effects)."""
    import torch

    from .data.tokens import TrainerTokenizer

    counter = TrainerTokenizer.wrapping(tokenizer)
    max_len = run.spec.model.max_seq_length
    total, count = 0.0, 0
    for row in rows:
        ids, mask = _ids_and_mask(counter, row, run.spec.data.assistant_only_loss)
        ids, mask = ids[:max_len], mask[:max_len]
        if sum(mask[1:]) == 0:
            continue
        input_ids = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, :-1].float()
        targets = input_ids[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        weights = torch.tensor(mask[1:], device=model.device, dtype=losses.dtype)
        total += float((losses * weights).sum())
        count += int(weights.sum())
    if count == 0:
        raise UserError("the evaluation rows hold no token to score within model.max_seq_length")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count, "rows": len(rows)}


def preference_scores(model, tokenizer, run: TrainedRun, rows: list[dict]) -> dict[str, float]:
    """For preference pairs: how often the chosen answer is likelier than the rejected one (summed log-prob of
    the answer tokens), and the mean margin, as DPO's reward accuracy and margin count them (without beta)."""
    from .data.tokens import TrainerTokenizer

    counter = TrainerTokenizer.wrapping(tokenizer)
    max_len = run.spec.model.max_seq_length
    margins = []
    for row in rows:
        chosen = _answer_logp(model, counter, row["prompt"], row["chosen"], row.get("tools"), max_len)
        rejected = _answer_logp(model, counter, row["prompt"], row["rejected"], row.get("tools"), max_len)
        margins.append(chosen - rejected)
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "preference_margin": sum(margins) / len(margins),
    }


def _answer_logp(model, counter, prompt, answer, tools, max_len: int) -> float:
    import torch

    prefix, _ = counter.chat(prompt, tools, add_generation_prompt=True)
    ids, _ = counter.chat(prompt + answer, tools)
    ids = ids[:max_len]
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0]
    return float(logp[len(prefix) - 1 :].sum())


def _ids_and_mask(tokenizer, row: dict, assistant_only: bool) -> tuple[list[int], list[int]]:
    if "text" in row:
        ids = tokenizer.text(row["text"])
        return ids, [1] * len(ids)
    if "chosen" in row:
        prompt, _ = tokenizer.chat(row["prompt"], row.get("tools"), add_generation_prompt=True)
        ids, _ = tokenizer.chat(row["prompt"] + row["chosen"], row.get("tools"))
        return ids, [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    ids, mask = tokenizer.chat(row["messages"], row.get("tools"))
    return ids, mask if assistant_only else [1] * len(ids)


def _prompt_and_reference(row: dict) -> tuple[list[dict] | None, str | None]:
    if "messages" in row:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return None, None
        return messages[:last], messages[last].get("content")
    if "chosen" in row:
        return row["prompt"], row["chosen"][-1].get("content")
    return None, None


def _rows(run: TrainedRun, files: list[str] | None, role: str) -> list[dict]:
    """Normalized rows: the run's own eval split, or files read with the run's data rules (format auto)."""
    if not files:
        path = run.folder.data_file("eval")
        if not path.is_file() or not path.read_text(encoding="utf-8").strip():
            raise UserError(
                f"{run.folder.root}: the run has no eval data",
                hint="pass --data FILE (held-out rows), or train with data.eval / data.eval_split",
            )
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from .data import prepare_data

    raw = run.spec.model_dump(mode="json")
    raw["data"]["train"] = [
        {"path": f if f.startswith("builtin:") else str(Path(f).absolute()), "format": "auto"} for f in files
    ]
    raw["data"]["eval"], raw["data"]["eval_split"], raw["data"]["shuffle"] = [], 0.0, False
    from .spec import spec_from_dict

    data = prepare_data(spec_from_dict(raw, source=f"--{role}"), read_hub=False)
    if data.skipped_sources:
        raise UserError(f"--{role}: {data.skipped_sources[0]} is not a local file", hint="give local files")
    return data.train


def _write(run: TrainedRun, report: dict, samples: list[dict]) -> None:
    target = run.folder.evaluation
    partial = target.with_name(".eval.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        (partial / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (partial / "samples.jsonl").write_text(
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8"
        )
        _plot(report, partial / "eval.png")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [name for name in ("task", "retain") if name in report]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    width = 0.35
    for offset, which in ((-width / 2, "base"), (width / 2, "tuned")):
        axis.bar(
            [i + offset for i in range(len(groups))],
            [report[g][which]["loss"] for g in groups],
            width,
            label=which,
        )
    axis.set_xticks(range(len(groups)), [f"{g} loss" for g in groups])
    axis.set_title("held-out loss: base vs tuned")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
