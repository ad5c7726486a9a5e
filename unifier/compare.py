"""`unify compare`: one recipe on several backends, compared step by step.

Each backend runs in its own process (compare_running.py), the report is rendered by compare_report.py; this
module compares run folders and holds the command. Runs record
a parity probe (output.probe: true), so differences are located: the first differing sample and
token, the first step whose loss differs beyond tolerance, and the final adapter difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .compare_report import print_report
from .compare_running import run_backends
from .errors import UserError
from .metrics import read_metrics, train_losses
from .runfolder import RunFolder

LOSS_RTOL = 1e-5  # fp32 on CPU: measured max relative difference ~2e-7 (peft vs swift vs unsloth's CPU path)
WEIGHT_ATOL = 1e-5  # initial trainable weights: same seed, same init (measured 0.0 on CPU)
# final weights after training: measured 0.0 (peft vs swift) and up to 3.2e-5 (unsloth's CPU path steps
# AdamW with the fused kernel, which rounds differently) after 20 steps at lr 3e-3
FINAL_WEIGHT_ATOL = 1e-4
# ...but AdamW turns a 1e-7 rounding difference in a near-zero gradient into a learning-rate-sized move of that
# element (m/sqrt(v) flips sign), so a few elements can differ by ~lr while the training is the same (seen once
# in a full test run: ms-swift's process rounded step 1's gradient norm 3e-7 apart; 21 of 32768 elements moved
# 3e-3, 0.28% of the update). Final weights therefore also count as equal when their distance is this small a
# fraction of the reference run's whole update, ||W_other - W_ref|| / ||W_ref - W_initial|| (Frobenius, all tensors).
FINAL_UPDATE_RTOL = 1e-2
INITIAL_WEIGHTS = "initial_trainable.safetensors"  # written by backends/probe.py


@dataclass
class Tolerances:
    loss_rtol: float = LOSS_RTOL
    weight_atol: float = WEIGHT_ATOL
    final_weight_atol: float = FINAL_WEIGHT_ATOL
    final_update_rtol: float = FINAL_UPDATE_RTOL


def compare_runs(folders: list[Path], tolerances: Tolerances = Tolerances()) -> dict[str, Any]:
    runs = [_load_run(folder) for folder in folders]
    reference = runs[0]
    pairs = []
    for other in runs[1:]:
        pairs.append(_compare_pair(reference, other, tolerances))
    return {
        "runs": [{k: v for k, v in run.items() if k not in ("losses", "folder_path")} for run in runs],
        "pairs": pairs,
        "tolerances": tolerances.__dict__,
        "within_tolerance": all(p["within_tolerance"] for p in pairs),
    }


def _load_run(folder: Path) -> dict[str, Any]:
    run_folder = RunFolder(folder)
    record = run_folder.read_record()
    metrics = read_metrics(run_folder.metrics)
    losses = train_losses(metrics)
    step_times = [m["step_time"] for m in metrics if m.get("step_time")]
    tokens = next((m["tokens_seen"] for m in reversed(metrics) if m.get("tokens_seen")), None)
    train_time = sum(step_times) if step_times else None
    return {
        "label": f"{record.get('backend')} ({folder.name})"
        if folder.name != record.get("backend")
        else record.get("backend"),
        "folder": str(folder),
        "folder_path": run_folder,
        "backend": record.get("backend"),
        "status": record.get("status"),
        "steps": losses[-1][0] if losses else 0,
        "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None,
        "losses": losses,
        "wall_time_s": record.get("wall_time_s"),
        "train_time_s": train_time,
        "tokens_per_s": (tokens / train_time) if tokens and train_time else None,
        "peak_memory_mb": (record.get("final_metrics") or {}).get("peak_memory_mb"),
        "eval": _eval_summary(run_folder),
        "method": ((record.get("spec") or {}).get("training") or {}).get("method", "sft"),
    }


def _eval_summary(folder: RunFolder) -> dict[str, Any] | None:
    """`unify eval`'s numbers of a run, when it was evaluated (eval/eval.json)."""
    path = folder.evaluation / "eval.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    summary = {"data": report.get("settings", {}).get("data")}
    for name in ("task", "retain"):
        if isinstance(report.get(name), dict):
            summary[name] = {which: report[name][which]["loss"] for which in ("base", "tuned")}
    if isinstance(report.get("rewards"), dict):  # GRPO: the rewards of greedy answers to held-out prompts
        summary["reward"] = {which: report["rewards"][which]["reward"] for which in ("base", "tuned")}
    if isinstance(report.get("pairs"), dict):  # a reward model: its score head's ranking of held-out pairs
        summary["pair_accuracy"] = report["pairs"]["tuned"]["pair_accuracy"]
    return summary


def _compare_pair(a: dict, b: dict, tol: Tolerances) -> dict[str, Any]:
    pair: dict[str, Any] = {"reference": a["label"], "other": b["label"]}
    probe_a, probe_b = a["folder_path"].probe, b["folder_path"].probe
    pair["samples"] = compare_samples(probe_a, probe_b)
    pair["trainable"] = compare_trainable(probe_a, probe_b)
    pair["initial_weights_max_abs_diff"] = weights_difference(
        probe_a / INITIAL_WEIGHTS, probe_b / INITIAL_WEIGHTS
    )
    pair["losses"] = compare_losses(a["losses"], b["losses"], tol.loss_rtol)
    pair["final_weights_max_abs_diff"] = final_weights_difference(a["folder_path"], b["folder_path"])
    pair["final_weights_update_relative_diff"] = update_relative_difference(
        a["folder_path"], b["folder_path"]
    )
    problems = []
    if pair["samples"].get("identical") is False:
        problems.append(f"tokenized samples differ: {pair['samples']['first_difference']}")
    if pair["trainable"].get("identical") is False:
        problems.append(f"trainable parameters differ: {pair['trainable']['difference']}")
    init = pair["initial_weights_max_abs_diff"]
    if isinstance(init, dict):
        problems.append(f"initial weights: {init['error']}")
    elif init is not None and init > tol.weight_atol:
        problems.append(f"initial trainable weights differ by up to {init:.3g}")
    if not pair["losses"]["within_tolerance"]:
        problems.append(pair["losses"]["summary"])
    final = pair["final_weights_max_abs_diff"]
    if isinstance(final, dict):
        problems.append(f"final weights: {final['error']}")
    elif final is not None and final > tol.final_weight_atol:
        relative = pair["final_weights_update_relative_diff"]
        if relative is None or relative > tol.final_update_rtol:
            of_update = "" if relative is None else f", {relative:.2%} of the training update"
            problems.append(
                f"final weights differ by up to {final:.3g} (> {tol.final_weight_atol:.0e}){of_update}"
            )
    pair["notes"] = []
    outcome = [p for p in problems if p.startswith(("losses", "final weights"))]
    if a["method"] == b["method"] == "grpo" and outcome:
        # each backend samples its own completions from the weights it has: a rounding difference in the weights
        # (or in the random stream) changes what is sampled, so only the inputs are the same by construction
        problems = [p for p in problems if p not in outcome]
        pair["notes"] = [
            "GRPO samples its completions from the weights of each step, so rounding (or each backend's own "
            "random stream) changes what it samples: losses and weights are reported, not required to match; "
            "prompts, parameters and initial weights are",
            *outcome,
        ]
    pair["problems"] = problems
    pair["within_tolerance"] = not problems
    return pair


def compare_samples(a: Path, b: Path) -> dict[str, Any]:
    fa, fb = a / "samples.jsonl", b / "samples.jsonl"
    if not (fa.is_file() and fb.is_file()):
        return {"identical": None, "note": "no probe recorded (run with output.probe: true)"}
    sa = [_comparable(json.loads(x)) for x in fa.read_text().splitlines()]
    sb = [_comparable(json.loads(x)) for x in fb.read_text().splitlines()]
    keys = [
        k
        for k in ("input_ids", "labels", "loss_mask", "kl_input_ids")
        if sa and sb and k in sa[0] and k in sb[0]
    ]
    if "input_ids" not in keys:
        return {
            "identical": None,
            "note": f"samples recorded in different layouts: {sorted(sa[0]) if sa else []} vs "
            f"{sorted(sb[0]) if sb else []}",
        }
    for index, (x, y) in enumerate(zip(sa, sb)):
        for key in keys:
            if x[key] != y[key]:
                position = next(
                    (i for i, (p, q) in enumerate(zip(x[key], y[key])) if p != q),
                    min(len(x[key]), len(y[key])),
                )
                return {
                    "identical": False,
                    "compared": len(sa),
                    "fields": keys,
                    "first_difference": f"sample {index}, {key}[{position}]: "
                    f"{x[key][position] if position < len(x[key]) else 'end'} vs "
                    f"{y[key][position] if position < len(y[key]) else 'end'}",
                }
    if len(sa) != len(sb):
        return {
            "identical": False,
            "compared": min(len(sa), len(sb)),
            "first_difference": f"{len(sa)} vs {len(sb)} samples",
        }
    return {"identical": True, "compared": len(sa), "fields": keys}


def _comparable(sample: dict) -> dict:
    """input_ids, and which tokens carry loss: labels where both trainers give them (SFT), else a 0/1 loss mask
    (trl's DPO collator gives completion_mask where ms-swift gives labels; trl's ORPO / CPO give the chosen side
    as chosen_input_ids / chosen_labels). The first position is dropped
    from both: a causal LM never predicts the first token (trl labels it, ms-swift masks it)."""
    if "input_ids" not in sample and "prompt_ids" in sample and "chosen_ids" not in sample:  # a GRPO prompt
        return {"input_ids": sample["prompt_ids"]}
    if "input_ids" not in sample and "chosen_input_ids" in sample:  # trl's ORPO / CPO layout: its chosen side
        sample = {"input_ids": sample["chosen_input_ids"], "labels": sample["chosen_labels"]}
    kl = sample.get("KL_completion_input_ids")  # KTO: the answer and the KL pair it is scored with
    if "input_ids" not in sample and "completion_input_ids" in sample:
        sample = {"input_ids": sample["completion_input_ids"], "labels": sample["completion_labels"]}
    out = {"input_ids": sample.get("input_ids"), "kl_input_ids": kl}
    if "labels" in sample:
        out["labels"] = sample["labels"][1:]
        out["loss_mask"] = [int(label != -100) for label in sample["labels"][1:]]
    elif "completion_mask" in sample:
        out["loss_mask"] = sample["completion_mask"][1:]
    return {k: v for k, v in out.items() if v is not None}


def compare_trainable(a: Path, b: Path) -> dict[str, Any]:
    fa, fb = a / "trainable.json", b / "trainable.json"
    if not (fa.is_file() and fb.is_file()):
        return {"identical": None}
    ta, tb = json.loads(fa.read_text()), json.loads(fb.read_text())
    if ta == tb:
        return {"identical": True, "count": ta["count"], "tensors": len(ta["parameters"])}
    only_a = sorted(set(ta["parameters"]) - set(tb["parameters"]))[:3]
    only_b = sorted(set(tb["parameters"]) - set(ta["parameters"]))[:3]
    return {
        "identical": False,
        "difference": f"counts {ta['count']} vs {tb['count']}; only in first: {only_a}; only in second: {only_b}",
    }


def weights_difference(a: Path, b: Path) -> float | dict | None:
    if not (a.is_file() and b.is_file()):
        return None
    from safetensors.torch import load_file  # torch: adapters may be saved in bfloat16, which numpy lacks

    ta, tb = load_file(str(a)), load_file(str(b))
    if set(ta) != set(tb):
        missing = sorted(set(ta) ^ set(tb))[:3]
        return {"error": f"different tensor names, e.g. {missing}"}
    worst = 0.0
    for key in ta:
        if ta[key].shape != tb[key].shape:
            return {"error": f"{key}: shape {ta[key].shape} vs {tb[key].shape}"}
        if ta[key].numel():
            worst = max(worst, float((ta[key].double() - tb[key].double()).abs().max()))
    return worst


def final_weights_difference(a: RunFolder, b: RunFolder) -> float | dict | None:
    for a_dir, b_dir, name in (
        (a.adapter, b.adapter, "adapter_model.safetensors"),
        (a.model, b.model, "model.safetensors"),
    ):
        if (a_dir / name).is_file() and (b_dir / name).is_file():
            return weights_difference(a_dir / name, b_dir / name)
    return None


def update_relative_difference(a: RunFolder, b: RunFolder) -> float | None:
    """||W_b - W_a|| / ||W_a - W_initial|| over the trainable tensors of two adapters (None when either adapter
    or the reference's initial weights from the parity probe are missing, or the names do not line up)."""
    names = "adapter_model.safetensors"
    initial = a.probe / INITIAL_WEIGHTS
    if not ((a.adapter / names).is_file() and (b.adapter / names).is_file() and initial.is_file()):
        return None
    from safetensors.torch import load_file

    wa, wb = load_file(str(a.adapter / names)), load_file(str(b.adapter / names))
    # the probe names the live module (".lora_A.default.weight"); saved adapters drop the adapter name
    w0 = {key.replace(".default.", "."): value for key, value in load_file(str(initial)).items()}
    if not (set(wa) == set(wb) == set(w0)):
        return None
    apart = sum(float(((wb[k].double() - wa[k].double()) ** 2).sum()) for k in wa)
    update = sum(float(((wa[k].double() - w0[k].double()) ** 2).sum()) for k in wa)
    return (apart / update) ** 0.5 if update > 0 else None


def compare_losses(a: list[tuple[int, float]], b: list[tuple[int, float]], rtol: float) -> dict[str, Any]:
    steps_a, steps_b = dict(a), dict(b)
    common = sorted(set(steps_a) & set(steps_b))
    worst, first_bad = 0.0, None
    for step in common:
        x, y = steps_a[step], steps_b[step]
        rel = abs(x - y) / max(abs(x), 1e-12)
        worst = max(worst, rel)
        if rel > rtol and first_bad is None:
            first_bad = {"step": step, "reference": x, "other": y, "relative": rel}
    same_steps = set(steps_a) == set(steps_b)
    ok = first_bad is None and same_steps and bool(common)
    if not common:
        summary = "no common logged steps"
    elif not same_steps:
        summary = f"different logged steps ({len(steps_a)} vs {len(steps_b)})"
    elif first_bad:
        summary = (
            f"losses differ from step {first_bad['step']}: {first_bad['reference']:.6f} vs {first_bad['other']:.6f} "
            f"(relative {first_bad['relative']:.2e} > {rtol:.0e})"
        )
    else:
        summary = f"{len(common)} steps within {rtol:.0e} relative"
    return {
        "steps_compared": len(common),
        "max_relative_difference": worst,
        "first_step_beyond_tolerance": first_bad,
        "within_tolerance": ok,
        "summary": summary,
    }


def compare_command(
    targets: list[Path],
    backends: str,
    runs_mode: bool,
    output: Path,
    overrides: list[str],
    console: Console,
    tolerances: Tolerances,
) -> int:
    output.mkdir(parents=True, exist_ok=True)
    failures: list[dict[str, Any]] = []
    if runs_mode:
        if len(targets) < 2:
            raise UserError(
                "--runs needs at least two run folders", hint="unify compare --runs runs/a runs/b"
            )
        folders = [Path(t) for t in targets]
    else:
        if len(targets) != 1:
            raise UserError(
                "give one recipe (or --runs with run folders)",
                hint="unify compare recipe.yaml --backends peft,swift",
            )
        names = [b.strip() for b in backends.split(",") if b.strip()]
        if len(names) < 2:
            raise UserError(f"--backends '{backends}': name at least two backends, e.g. peft,swift")
        from .backends.registry import get_backend
        from .spec import load_spec

        spec = load_spec(targets[0], overrides)
        for name in names:
            problems = get_backend(name).check(spec)
            if problems:
                raise UserError(f"backend '{name}' cannot run this recipe: {problems[0]}")
        folders, failures = run_backends(targets[0], names, output, overrides, console, spec.name)
        if len(folders) < 2:
            report = {"runs": [], "pairs": [], "failed": failures, "within_tolerance": False}
            (output / "compare.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
            for failure in failures:
                console.print(
                    f"{failure['backend']}: failed (exit {failure['exit_code']}); log: {failure['log']}"
                )
            console.print(
                f"[red]fewer than two backends completed[/]: nothing to compare; wrote {output / 'compare.json'}"
            )
            return 1
    report = compare_runs(folders, tolerances)
    if failures:
        report["failed"] = failures
        report["within_tolerance"] = False
    (output / "compare.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    from .plots import plot_losses

    curves = {}
    for folder, run in zip(folders, report["runs"]):
        curves[run["label"]] = train_losses(read_metrics(RunFolder(folder).metrics))
    plot_losses(curves, output / "compare.png", "training loss by backend (same recipe)")
    print_report(report, console)
    console.print(f"wrote {output / 'compare.json'} and {output / 'compare.png'}")
    return 0 if report["within_tolerance"] else 1
