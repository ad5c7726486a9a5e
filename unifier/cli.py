"""The `unify` command line. Heavy libraries are imported only by the backend that runs."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .backends import registry
from .errors import TrainingFailed, UserError
from .interrupts import Interrupted
from .secrets import redact_text

BACKEND_NAMES = registry.active().names()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: typer's rich panels print '<bool>' after every flag
    help=f"One fine-tuning recipe, {len(BACKEND_NAMES)} backends ({', '.join(BACKEND_NAMES)}).",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


class _WarningPrinter(logging.Handler):
    """unifier's warnings (logging, for library users) as terminal lines."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(
            f"[yellow]warning:[/] {escape(redact_text(record.getMessage()))}", highlight=False, soft_wrap=True
        )


_logger = logging.getLogger("unifier")
_logger.addHandler(_WarningPrinter(level=logging.WARNING))
_logger.propagate = False


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"unifier {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print unifier's version and exit."
    ),
) -> None:
    """One fine-tuning recipe, translated for each backend."""


RecipeArg = typer.Argument(..., help="Recipe YAML file.", show_default=False)
BackendOpt = typer.Option(
    None, "--backend", "-b", help=f"{' | '.join(BACKEND_NAMES)} | auto (default: the recipe's backend)."
)
SetOpt = typer.Option(
    None, "--set", "-s", help="Override a recipe value: --set training.learning_rate=1e-4 (repeatable)."
)


def user_errors(func):
    """Turn user mistakes into a message and exit code 2, training failures into exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            err.print(
                f"[bold red]error:[/] {escape(redact_text(exc.message))}", highlight=False, soft_wrap=True
            )
            if exc.hint:
                err.print(
                    f"  [yellow]hint:[/] {escape(redact_text(exc.hint))}", highlight=False, soft_wrap=True
                )
            raise typer.Exit(2) from None
        except TrainingFailed as exc:
            err.print(
                f"[bold red]training failed:[/] {escape(redact_text(str(exc)))}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except Interrupted as exc:
            where = f"checkpoint at step {exc.step} kept" if exc.resumable else "no checkpoint was saved yet"
            err.print(
                f"[bold yellow]interrupted[/] ({exc}): {where}; continue with `unify resume {exc.run_dir}`",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _load(recipe: Path, overrides: list[str] | None):
    from .spec import load_spec

    return load_spec(recipe, overrides or [])


@app.command()
@user_errors
def run(
    recipe: Path = RecipeArg,
    backend: str | None = BackendOpt,
    set_: list[str] | None = SetOpt,
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in the recipe's run folder from its newest checkpoint (a new run "
        "when the folder is empty).",
    ),
    discard_checkpoints: bool = typer.Option(
        False,
        "--discard-checkpoints",
        help="With output.if_exists: overwrite, also delete a resumable run's checkpoints.",
    ),
):
    """Train: check the recipe, normalize the data, run the backend, write the run folder."""
    from .core import run as run_job

    spec = _load(recipe, set_)
    outcome = run_job(
        spec, backend, recipe=str(recipe), resume=resume, discard_checkpoints=discard_checkpoints
    )
    _print_outcome(outcome)


@app.command()
@user_errors
def resume(
    run_dir: Path = typer.Argument(..., help="A run folder written by `unify run`.", show_default=False),
    set_: list[str] | None = SetOpt,
    force: bool = typer.Option(
        False,
        "--force",
        help="Allow changing training.max_steps, training.epochs or output.save (e.g. to train longer).",
    ),
):
    """Continue an interrupted or crashed run from its newest complete checkpoint (same recipe, same data)."""
    from .core import resume as resume_job

    _print_outcome(resume_job(run_dir, overrides=set_ or [], force=force))


def _print_outcome(outcome) -> None:
    losses = outcome.losses
    summary = f"{len(losses)} logged steps" + (
        f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    )
    out.print(f"[green]{outcome.status}[/] with {outcome.backend}: {summary}")
    out.print(f"run folder: {outcome.run_dir}")


@app.command()
@user_errors
def validate(
    recipe: Path = RecipeArg,
    backend: str | None = BackendOpt,
    set_: list[str] | None = SetOpt,
    tokens: bool = typer.Option(
        True,
        "--tokens/--no-tokens",
        help="Token statistics with the recipe's tokenizer when it is on this "
        "machine (reads tokenizer.json; --no-tokens checks schema, data and model folder only).",
    ),
):
    """Check the recipe, its data, the model folder and the backend, before anything runs (nothing written).

    Exit 2 when the recipe is wrong, or the chosen backend can never run it. What this machine lacks for it
    (a package, a GPU) is listed but does not fail: recipes for bigger machines validate anywhere. No torch
    is imported."""
    from .core import checked_backend, choose_backend
    from .data import prepare_data
    from .errors import BackendUnavailable

    spec = _load(recipe, set_)
    data = prepare_data(spec, read_hub=False)
    requested = backend or spec.backend
    chosen = checked_backend(spec, requested, here=False)  # exit 2: that backend can never run this recipe
    if requested == "auto":
        with contextlib.suppress(BackendUnavailable):
            chosen = choose_backend(spec, "auto", here=True)  # prefer one that runs on this machine
    label = chosen.name if requested != "auto" else f"auto -> {chosen.name}"
    missing_here = chosen.check(spec, here=True)
    out.print(f"[green]valid[/]: {recipe}")
    out.print(f"  model: {spec.model.name_or_path} ({spec.adapter.type}, {spec.training.method})")
    out.print(
        f"  data: {len(data.train)} train rows, {len(data.eval)} eval rows, {data.kind} ({', '.join(data.formats) or '-'})"
    )
    for skipped in data.skipped_sources:
        out.print(f"  [yellow]not read[/] (read through `datasets` when the job runs): {skipped}")
    out.print(f"  backend: {label}")
    for problem in missing_here:
        out.print(f"  [yellow]not runnable on this machine[/]: {problem}", highlight=False)
    if tokens and data.train:
        from .data.tokens import check_trainable
        from .model_info import read_model_info

        stats, note = check_trainable(
            spec, data, read_model_info(spec.model.name_or_path, spec.model.revision)
        )
        if stats is None:
            out.print(f"  tokens: not counted ({note})", highlight=False)
        else:
            q = stats.quantiles
            out.print(
                f"  tokens per row: min {q['min']}, median {q['median']}, p95 {q['p95']}, max {q['max']}; "
                f"{stats.truncated_rows} rows longer than max_seq_length {stats.max_seq_length}",
                highlight=False,
            )
            out.print(
                f"  trained tokens: {stats.trained_tokens} per pass; {stats.steps_per_epoch} steps per pass "
                f"at batch {stats.batch_size}; padding {stats.padding_fraction:.0%} unpacked, "
                f"{stats.packed_padding_fraction:.0%} packed",
                highlight=False,
            )
    for warning in data.warnings:
        out.print(f"  [yellow]warning[/]: {escape(warning)}", highlight=False)


@app.command()
@user_errors
def plan(
    recipe: Path = RecipeArg,
    backend: str | None = BackendOpt,
    set_: list[str] | None = SetOpt,
    as_json: bool = typer.Option(
        False, "--json", help="Print the plan's arguments as JSON instead of the script."
    ),
    write: Path | None = typer.Option(
        None,
        "--write",
        help="Also write the plan and its data to this run folder (as `unify prepare` does): "
        "`bash DIR/run.sh` trains.",
    ),
):
    """Print the exact native script or command a backend would run (nothing is run or written without --write)."""
    from .core import plan as make_plan

    if write is not None:
        from .running import prepare as prepare_run

        spec = _load(recipe, [*(set_ or []), f"output.dir={write.absolute()}"])
        folder, the_plan = prepare_run(spec, backend, recipe=str(recipe), quiet=True)
        err.print(f"wrote {folder.root}: `bash {folder.run_script}` trains", highlight=False, soft_wrap=True)
    else:
        spec = _load(recipe, set_)
        the_plan = make_plan(spec, backend)
    if as_json:
        sys.stdout.write(json.dumps(the_plan.to_json(), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(the_plan.render().rstrip("\n") + "\n")


@app.command()
@user_errors
def prepare(recipe: Path = RecipeArg, backend: str | None = BackendOpt, set_: list[str] | None = SetOpt):
    """Write the run folder without training: normalized data, the backend's views, the native program and
    run.sh, so the command `unify plan` prints runs as is."""
    from .running import prepare as prepare_run

    folder, the_plan = prepare_run(_load(recipe, set_), backend, recipe=str(recipe))
    out.print(
        f"prepared {folder.root}; train with `bash {folder.run_script}` "
        f"(or `unify run {recipe} --backend {the_plan.backend}`)"
    )


@app.command()
def schema():
    """Print the recipe's JSON schema (every field with its description)."""
    from .spec import JobSpec

    sys.stdout.write(json.dumps(JobSpec.model_json_schema(), indent=2) + "\n")


@app.command()
def backends():
    """Which backends are installed here, and what each supports."""
    from .backends.base import missing_packages
    from .backends.registry import all_backends

    table = Table(title="unifier backends")
    table.add_column("backend", style="bold")
    table.add_column("available")
    for row in ("adapters", "quantization", "methods", "distributed", "dora / rslora", "packing"):
        table.add_column(row)
    for backend in all_backends():
        missing = missing_packages(backend.requires)
        status = (
            "[green]yes[/]" if not missing else f"[red]no[/] (pip install 'unifier[{backend.pip_extra}]')"
        )
        table.add_row(backend.name, status, *backend.capabilities.as_rows().values())
    out.print(table)
    for backend in all_backends():
        out.print(f"[bold]{backend.name}[/]: {backend.description}")
        for note in backend.capabilities.notes:
            out.print(f"  - {note}")


@app.command()
@user_errors
def init(
    path: Path = typer.Argument(Path("recipe.yaml"), help="Where to write the starter recipe."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    model: str | None = typer.Option(
        None, "--model", help="Hub name or local folder (default: builtin:tiny-qwen2, CPU-sized values)."
    ),
    data: str | None = typer.Option(None, "--data", help="Training data file or hub dataset."),
    data_format: str | None = typer.Option(
        None, "--format", help="messages | sharegpt | alpaca | text | preference (default: auto-detected)."
    ),
    method: str = typer.Option("sft", "--method", help="sft | dpo."),
    qlora: bool = typer.Option(False, "--qlora", help="QLoRA: LoRA on a 4-bit NF4 base (bitsandbytes)."),
):
    """Write a starter recipe (LoRA SFT on the built-in tiny model and data unless options say otherwise)."""
    from .starter import starter_recipe

    if path.exists() and not force:
        raise UserError(f"{path}: already exists", hint="pass --force to overwrite, or give another path")
    text = starter_recipe(model=model, data=data, data_format=data_format, method=method, qlora=qlora)
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}; check it with `unify validate {path}`")


@app.command()
@user_errors
def demo(
    backend: str = typer.Option("peft", "--backend", "-b", help="Backend to run the demo with."),
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Run folder (overwritten)."),
):
    """Build the tiny local model, fine-tune it with LoRA on CPU, show the loss falling and a generation."""
    from .demo import run_demo

    run_demo(backend, output, out)


@app.command()
@user_errors
def compare(
    targets: list[Path] = typer.Argument(..., help="A recipe, or with --runs two or more run folders."),
    backends_: str = typer.Option(
        ",".join(BACKEND_NAMES), "--backends", help="Comma-separated backends to run the recipe on."
    ),
    runs: bool = typer.Option(
        False, "--runs", help="Compare existing run folders instead of running a recipe."
    ),
    output: Path = typer.Option(
        Path("runs/compare"), "--output", "-o", help="Where compare.json and compare.png go."
    ),
    loss_rtol: float = typer.Option(
        1e-5, "--loss-rtol", help="Largest relative per-step loss difference that counts as equal."
    ),
    weight_atol: float = typer.Option(
        1e-5, "--weight-atol", help="Largest initial-weight difference that counts as equal."
    ),
    final_weight_atol: float = typer.Option(
        1e-4, "--final-weight-atol", help="Largest final-weight difference that counts as equal."
    ),
    final_update_rtol: float = typer.Option(
        1e-2,
        "--final-update-rtol",
        help="Final weights past --final-weight-atol still count as equal when they are this close "
        "relative to the training update (AdamW moves near-zero-gradient elements by ~lr on rounding).",
    ),
    set_: list[str] | None = SetOpt,
):
    """Run one recipe on several backends (each in its own process) and compare them step by step. Exit 1 on a difference."""
    from .compare import Tolerances, compare_command

    code = compare_command(
        targets,
        backends_,
        runs,
        output,
        set_ or [],
        out,
        Tolerances(loss_rtol, weight_atol, final_weight_atol, final_update_rtol),
    )
    raise typer.Exit(code)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
