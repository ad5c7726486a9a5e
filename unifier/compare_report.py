"""`unify compare`, rendering: the comparison report (unifier/compare.py) as rich tables and verdict lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="unify compare")
    for column in (
        "run",
        "steps",
        "first loss",
        "last loss",
        "max rel. loss diff",
        "adapter max abs diff",
        "wall time",
        "tokens/s",
        "peak mem",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    by_label = {p["other"]: p for p in report["pairs"]}
    for run in report["runs"]:
        pair = by_label.get(run["label"])
        loss_diff = "reference" if pair is None else f"{pair['losses']['max_relative_difference']:.2e}"
        final = None if pair is None else pair["final_weights_max_abs_diff"]
        weight = (
            "-"
            if pair is None
            else ("n/a" if final is None else (final["error"] if isinstance(final, dict) else f"{final:.2e}"))
        )
        table.add_row(
            run["label"],
            str(run["steps"]),
            _fmt(run["first_loss"], ".4f"),
            _fmt(run["last_loss"], ".4f"),
            loss_diff,
            weight,
            _fmt(run["wall_time_s"], ".1f", "s"),
            _fmt(run["tokens_per_s"], ".0f"),
            _fmt(run["peak_memory_mb"], ".0f", " MB"),
        )
    for failure in report.get("failed", []):
        table.add_row(failure["backend"], f"[red]failed (exit {failure['exit_code']})[/]", *["-"] * 7)
    console.print(table)
    for failure in report.get("failed", []):
        console.print(f"{failure['backend']}: [red]failed[/]: {failure['message']} (log: {failure['log']})")
    evaluated = [run for run in report["runs"] if run.get("eval")]
    if evaluated:
        table = Table(title="unify eval results (base -> tuned)")
        names = ["task", "retain"] + [
            n for n in ("reward", "pair_accuracy") if any(n in r["eval"] for r in evaluated)
        ]
        headers = {"task": "task loss", "retain": "retain loss", "reward": "held-out reward"}
        for column in ("run", *(headers.get(n, "pair accuracy") for n in names), "eval data"):
            table.add_column(column)
        for run in evaluated:
            results = run["eval"]
            cells = [
                "-"
                if name not in results
                else f"{results[name]:.0%}"
                if name == "pair_accuracy"
                else f"{results[name]['base']:.4f} -> {results[name]['tuned']:.4f}"
                for name in names
            ]
            table.add_row(run["label"], *cells, ", ".join(Path(d).name for d in results["data"] or []))
        console.print(table)
    for pair in report["pairs"]:
        verdict = (
            "[red]DIFFER[/]"
            if not pair["within_tolerance"]
            else "[yellow]match (inputs only)[/]"
            if pair.get("notes")
            else "[green]match[/]"
        )
        samples = pair["samples"]
        console.print(
            f"{pair['reference']} vs {pair['other']}: {verdict}; samples "
            f"{'identical' if samples.get('identical') else samples.get('first_difference', 'not recorded')}; "
            f"{pair['losses']['summary']}"
        )
        for problem in pair["problems"]:
            console.print(f"  - {problem}")
        for note in pair.get("notes", []):
            console.print(f"  [dim]note[/]: {note}")


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"
