"""`unify eval RUN_DIR`: did the model get better at the task, and did it forget what it knew?

Held-out loss and perplexity of the tuned model and of its base on the same rows (the run's eval data, or
files given), on the tokens training would put loss on (the recipe's chat template and assistant-only mask;
all tokens of raw text; the chosen answer of a preference pair); the same two numbers on a retain set that is
not the training task (a forgetting check: the tuned model's retain loss may rise by at most
`max_retain_increase`, relative); and greedy answers of base and tuned for the first prompts next to the
reference. Benchmarks run on EvalScope (the seed document's choice; `swift eval` uses it too) with local
datasets only: `general_qa` (query/response rows, BLEU and ROUGE), the base and the tuned model (merged into a temporary folder) under the same settings. Written to
RUN_DIR/eval/ (eval.json, samples.jsonl, eval.png, eval.log, evalscope/) through a temporary folder, so eval/ is
complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .runfolder import scratch_folder
from .trained import TrainedRun, generate, load_model

DEFAULT_MAX_RETAIN_INCREASE = 0.10
BENCHMARKS = ("general_qa",)  # EvalScope's local custom QA benchmark (query/response rows)


@dataclass(frozen=True)
class EvalRequest:
    """What `unify eval` was asked (recorded as eval.json's settings)."""

    data: list[str] | None
    retain: list[str] | None
    samples: int
    max_new_tokens: int
    max_retain_increase: float
    benchmarks: dict[str, str]


def evaluate(
    run_dir: str | Path,
    *,
    data: list[str] | None = None,
    retain: list[str] | None = None,
    samples: int = 3,
    max_new_tokens: int = 48,
    max_retain_increase: float = DEFAULT_MAX_RETAIN_INCREASE,
    benchmarks: dict[str, str] | None = None,
    lock: bool = True,
    replace: bool = True,
) -> dict[str, Any]:
    """The report (also written to RUN_DIR/eval/eval.json). benchmarks: {EvalScope benchmark: local file}.
    lock=False: the caller holds the run folder's lock (`unify run` with eval.after_training).
    replace=False (`unify eval` without --force): an earlier eval/ is refused, not replaced."""
    from .method_eval import check_reward_files
    from .methods import method
    from .runlock import RunLock

    run = TrainedRun.open(run_dir)
    scores = method(run.spec.training.method).eval_scores
    if scores == "score_head" and (retain or benchmarks):
        raise UserError(
            f"{run.folder.root}: a reward model scores text, it does not write any: --retain and --benchmark "
            "score what a model writes",
            hint="eval ranks held-out preference pairs by its score head: the run's eval split, or --data FILE",
        )
    if scores == "rewards":
        check_reward_files(run)
    request = EvalRequest(
        _absolute(data), _absolute(retain), samples, max_new_tokens, max_retain_increase, benchmarks or {}
    )
    held = RunLock(run.folder.lock).acquire() if lock else None
    try:
        if not replace and (run.folder.evaluation / "eval.json").is_file():
            raise UserError(
                f"{run.folder.evaluation}: the run already has an eval (eval.json)",
                hint="pass --force to replace it, or copy it away first",
            )
        return _evaluate_locked(run, request)
    finally:
        if held is not None:
            held.release()


def _absolute(files: list[str] | None) -> list[str] | None:
    return [f if f.startswith("builtin:") else str(Path(f).absolute()) for f in files] if files else None


def _evaluate_locked(run: TrainedRun, request: EvalRequest) -> dict[str, Any]:

    if run.folder.evaluation.exists() and not run.folder.evaluation.is_dir():
        raise UserError(f"{run.folder.evaluation}: a file is in the way of the eval folder")
    request = dataclasses.replace(request, benchmarks=checked_benchmarks(request.benchmarks))
    # a run without eval data is evaluated on the retain set and the benchmarks alone
    alone = (request.benchmarks or request.retain) and not request.data and not _has_eval_data(run)
    task_rows = None if alone else _rows(run, request.data, "eval")
    if task_rows and "label" in task_rows[0]:  # KTO's answers: the desirable ones are the task
        held_out = len(task_rows)
        task_rows = [row for row in task_rows if row["label"]]
        if not task_rows:
            raise UserError(
                f"{run.folder.root}: none of the {held_out} held-out KTO answers is desirable (label true): "
                "eval scores the desirable answers",
                hint="pass --data FILE with desirable answers, or hold out rows of both labels",
            )
    retain_rows = _rows(run, request.retain, "retain") if request.retain else None
    partial = scratch_folder(run.folder.root, ".eval.", ".partial")
    try:
        report = _evaluate(run, partial, request, task_rows, retain_rows)
        if run.folder.evaluation.is_dir():
            shutil.rmtree(run.folder.evaluation)
        partial.rename(run.folder.evaluation)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _evaluate(run: TrainedRun, partial: Path, request: EvalRequest, task_rows, retain_rows) -> dict[str, Any]:
    from . import terminal

    if terminal.current_log() is None:  # `unify eval`: the libraries' output goes to eval/eval.log
        terminal.log_to(partial / "eval.log")
    samples, max_new_tokens = request.samples, request.max_new_tokens
    max_retain_increase, benchmarks = request.max_retain_increase, request.benchmarks
    report: dict[str, Any] = {
        "run": str(run.folder.root),
        "backend": run.record.get("backend"),
        "settings": {
            **dataclasses.asdict(request),
            "data": request.data or ([str(run.folder.data_file("eval"))] if task_rows is not None else None),
            "max_seq_length": run.spec.model.max_seq_length,
            "decoding": "greedy",
        },
    }
    from .methods import method

    scores = method(run.spec.training.method).eval_scores
    if scores == "score_head":  # a reward model: its trained head ranks the held-out pairs
        from .method_eval import load_score_model, score_pairs

        model, tokenizer = load_score_model(run)
        report["pairs"] = {"tuned": score_pairs(model, tokenizer, run, task_rows)}
        _write(partial, report, [])
        return report
    reward_samples = None
    if scores == "rewards" and task_rows is not None:
        report["rewards"], reward_samples = _reward_eval(run, task_rows, samples)
        task_rows = None  # prompts have no answer to compute a loss on
    prompts = [(p, r) for p, r in map(_prompt_and_reference, (task_rows or [])[:samples]) if p is not None]
    written_samples: list[dict] = reward_samples or [{"prompt": p, "reference": r} for p, r in prompts]
    for which in ("base", "tuned") if task_rows is not None or retain_rows is not None else ():
        model, tokenizer = load_model(run, tuned=which == "tuned")
        if task_rows is not None:
            report.setdefault("task", {})[which] = held_out_loss(model, tokenizer, run, task_rows)
            if task_rows and "chosen" in task_rows[0]:
                report["task"][which].update(preference_scores(model, tokenizer, run, task_rows))
        if retain_rows is not None:
            report.setdefault("retain", {})[which] = held_out_loss(model, tokenizer, run, retain_rows)
        for sample, (prompt, _) in zip(written_samples, prompts):
            sample[which] = generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
        del model
    if "task" in report:
        report["task"]["loss_change"] = report["task"]["tuned"]["loss"] - report["task"]["base"]["loss"]
    if retain_rows is not None:
        base, tuned = report["retain"]["base"]["loss"], report["retain"]["tuned"]["loss"]
        increase = (tuned - base) / base if base else 0.0
        report["retain"]["relative_increase"] = increase
        report["retain"]["forgetting"] = increase > max_retain_increase
    if benchmarks:
        report["benchmarks"] = run_benchmarks(run, partial, benchmarks, max_new_tokens)
    _write(partial, report, written_samples)
    return report


def _reward_eval(run: TrainedRun, rows: list[dict], samples: int) -> tuple[dict[str, Any], list[dict]]:
    """GRPO: the run's rewards of base's and tuned's greedy answers to the held-out prompts, and the first
    `samples` answers with their rewards (samples.jsonl)."""
    from .method_eval import held_out_rewards

    written = [{"prompt": row["prompt"], "reference": row["columns"].get("answer")} for row in rows[:samples]]
    rewards: dict[str, Any] = {}
    for which in ("base", "tuned"):
        model, tokenizer = load_model(run, tuned=which == "tuned")
        rewards[which], scored = held_out_rewards(model, tokenizer, run, rows)
        for sample, answer in zip(written, scored):
            sample[which], sample[f"{which}_reward"] = answer["completion"], answer["reward"]
        del model
    rewards["change"] = rewards["tuned"]["reward"] - rewards["base"]["reward"]
    rewards["max_completion_length"] = run.spec.training.grpo.max_completion_length
    return rewards, written


def checked_benchmarks(benchmarks: dict[str, str]) -> dict[str, str]:
    """Known EvalScope benchmarks on local .jsonl files whose rows have the benchmark's keys, EvalScope
    installed: all checked before any model loads."""
    import importlib.util

    checked = {}
    for name, path in benchmarks.items():
        if name not in BENCHMARKS:
            raise UserError(
                f"--benchmark {name}: not a benchmark unifier runs on local data; expected "
                + " or ".join(f"{b}=FILE.jsonl" for b in BENCHMARKS)
            )
        local = Path(path)
        if not local.is_file() or local.suffix != ".jsonl":
            raise UserError(
                f"--benchmark {name}={path}: expected a local .jsonl file (EvalScope reads it here)"
            )
        _check_benchmark_rows(name, local)
        checked[name] = str(local.absolute())
    if checked and importlib.util.find_spec("evalscope") is None:
        raise UserError(
            "--benchmark needs EvalScope, which is not installed", hint="pip install 'unifier[eval]'"
        )
    return checked


def _check_benchmark_rows(name: str, path: Path) -> None:
    """general_qa rows: {"query": text, "response": text} (EvalScope's custom QA format)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not readable ({exc})") from None
    if not lines:
        raise UserError(f"{path}: no rows")
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{number}: not JSON") from None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("query"), str)
            and isinstance(row.get("response"), str)
        ):
            raise UserError(
                f"{path}:{number}: a {name} row needs text fields query and response",
                hint='e.g. {"query": "What is the capital of France?", "response": "Paris."}',
            )


def run_benchmarks(run: TrainedRun, partial: Path, benchmarks: dict[str, str], max_new_tokens: int) -> dict:
    """EvalScope on the base and the tuned model: each benchmark's primary metric, side by side."""
    import tempfile

    from .exporting import _write_merged

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=partial) as scratch:
        tuned = Path(scratch) / "tuned"
        _write_merged(run, tuned, run.spec.model.dtype)
        for which, model in (("base", run.base), ("tuned", str(tuned))):
            scores = _evalscope(model, which, partial / "evalscope", benchmarks, max_new_tokens)
            for name, (metric, score) in scores.items():
                results.setdefault(name, {"metric": metric, "data": benchmarks[name]})[which] = score
    return results


def _evalscope(model: str, model_id: str, work_dir: Path, benchmarks: dict[str, str], max_new_tokens: int):
    from evalscope import TaskConfig, run_task

    dataset_args = {}
    for name, path in benchmarks.items():
        local = Path(path)
        dataset_args[name] = {"local_path": str(local.parent), "subset_list": [local.stem]}
    task = TaskConfig(
        model=model,
        model_id=model_id,
        datasets=list(benchmarks),
        dataset_args=dataset_args,
        eval_type="llm_ckpt",
        generation_config={"max_tokens": max_new_tokens, "temperature": 0.0, "do_sample": False},
        work_dir=str(work_dir / model_id),
        no_timestamp=True,
        seed=0,
    )
    reports = run_task(task)
    scores = {}
    for name, report in reports.items():
        primary = next(m for m in report.metrics if m.identity == report.primary_metric_identity)
        dims = ", ".join(f"{k} {v}" for k, v in sorted(primary.identity.dimensions.items()))
        scores[name] = (f"{primary.identity.name} ({dims})" if dims else primary.identity.name, primary.score)
    return scores


def held_out_loss(model, tokenizer, run: TrainedRun, rows: list[dict]) -> dict[str, float]:
    """Mean loss per trained token (and its perplexity) over rows, one row at a time (no padding effects)."""
    import torch

    counter = run_encoder(tokenizer, run)
    max_len = run.spec.model.max_seq_length
    total, count = 0.0, 0
    for row in rows:
        ids, mask = _ids_and_mask(counter, row)
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
    counter = run_encoder(tokenizer, run)
    margins = []
    for row in rows:
        pair = counter.encode("preference", row).layout
        chosen = _answer_logp(model, pair["prompt_ids"], pair["chosen_ids"])
        rejected = _answer_logp(model, pair["prompt_ids"], pair["rejected_ids"])
        margins.append(chosen - rejected)
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "preference_margin": sum(margins) / len(margins),
    }


def _answer_logp(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """Summed log-probability of the answer tokens after the prompt (the encoder truncated both as training)."""
    import torch

    input_ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0]
    return float(logp[len(prompt_ids) - 1 :].sum())


def run_encoder(tokenizer, run: TrainedRun):
    """The run's own encoder (unifier/data/encode.py) on the loaded tokenizer and the template it trained with:
    eval scores exactly the tokens training did."""
    from .data.encode import ChatTemplate, Encoder, Vocabulary

    template = (
        ChatTemplate(tokenizer.chat_template, "the run's chat template", "run")
        if tokenizer.chat_template
        else None
    )
    m = run.spec.model
    return Encoder(
        Vocabulary.from_transformers(tokenizer), template, max_len=m.max_seq_length,
        assistant_only=run.spec.data.assistant_only_loss,
    )  # fmt: skip


def _ids_and_mask(encoder, row: dict) -> tuple[list[int], list[int]]:
    """A row's tokens and loss mask as training encodes them (a preference pair: its chosen side)."""
    kind = (
        "text"
        if "text" in row
        else "preference"
        if "chosen" in row
        else "unpaired"
        if "label" in row
        else "chat"
    )
    encoded = encoder.encode(kind, row)
    return encoded.ids, encoded.mask


def _prompt_and_reference(row: dict) -> tuple[list[dict] | None, str | None]:
    if "messages" in row:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return None, None
        return messages[:last], messages[last].get("content")
    if "chosen" in row:
        return row["prompt"], row["chosen"][-1].get("content")
    if "completion" in row:
        return row["prompt"], row["completion"][-1].get("content")
    return None, None


def check_retain_sources(spec) -> None:
    """eval.retain must name data that is here (before training: the eval at the end would fail)."""
    from .builtin import unknown_builtin

    for path in spec.eval.retain:
        problem = unknown_builtin(path)
        if problem:
            raise UserError(f"eval.retain: {problem}")
        if not path.startswith("builtin:") and not Path(path).is_file():
            raise UserError(
                f"eval.retain: {path} is not a local file",
                hint="relative paths resolve against the recipe's folder; builtin:tiny-retain is shipped",
            )


def _has_eval_data(run: TrainedRun) -> bool:
    path = run.folder.data_file("eval")
    return path.is_file() and bool(path.read_text(encoding="utf-8").strip())


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
    if role == "retain":  # general data (chat or text rows), whatever the run trained on
        method = raw["training"].get("method", "sft")
        raw["training"]["method"] = "sft"
        raw["training"].pop(method, None)  # its options section
    raw["data"]["train"] = [
        {"path": f if f.startswith("builtin:") else str(Path(f).absolute()), "format": "auto"} for f in files
    ]
    raw["data"]["eval"], raw["data"]["eval_split"], raw["data"]["shuffle"] = [], 0.0, False
    from .spec import spec_from_dict

    option = "--data" if role == "eval" else "--retain"
    try:
        data = prepare_data(spec_from_dict(raw, source=option), read_hub=False)
    except UserError as exc:
        if any(f in exc.message for f in files):  # it names the file (and row) already
            raise
        raise UserError(f"{option} {' '.join(files)}: {exc.message}", hint=exc.hint) from None
    if data.skipped_sources:
        raise UserError(f"{option}: {data.skipped_sources[0]} is not a local file", hint="give local files")
    return data.train


def _write(partial: Path, report: dict, samples: list[dict]) -> None:
    (partial / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (partial / "samples.jsonl").write_text(
        "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8"
    )
    _plot(report, partial / "eval.png")


def _plot(report: dict, path: Path) -> None:
    """Base vs tuned bars: held-out losses (task, retain) and, for GRPO, the held-out rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    losses = [name for name in ("task", "retain") if name in report]
    if losses:
        bars = {w: [report[g][w]["loss"] for g in losses] for w in ("base", "tuned")}
        panels.append(("held-out loss: base vs tuned", [f"{g} loss" for g in losses], bars))
    if "rewards" in report:
        rewards = report["rewards"]
        names = [k for k in rewards["tuned"] if k == "reward" or k.startswith("rewards/")]
        names = [k for k in names if rewards["base"][k] is not None and rewards["tuned"][k] is not None]
        bars = {w: [rewards[w][k] for k in names] for w in ("base", "tuned")}
        labels = [k.removeprefix("rewards/").removesuffix("/mean") for k in names]
        panels.append(("held-out reward (greedy): base vs tuned", labels, bars))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
    width = 0.35
    for axis, (title, labels, bars) in zip(axes[0], panels):
        for offset, which in ((-width / 2, "base"), (width / 2, "tuned")):
            axis.bar([i + offset for i in range(len(labels))], bars[which], width, label=which)
        axis.set_xticks(range(len(labels)), labels)
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
