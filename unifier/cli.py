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

from . import terminal
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
# unifier's own lines go to the terminal, also while other libraries' output is kept in run.log
out = Console(file=terminal.TerminalFile("stdout"), width=None if sys.stdout.isatty() else 160)
err = Console(file=terminal.TerminalFile("stderr"))


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
VerboseOpt = typer.Option(
    False,
    "--verbose",
    "-v",
    help="Show everything the backend and its libraries print (by default it goes to RUN_DIR/run.log).",
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
            tail = terminal.log_tail()
            for line in tail:
                err.print(f"  {escape(redact_text(line))}", highlight=False, soft_wrap=True)
            if terminal.last_log():
                err.print(
                    f"  what the libraries printed: {terminal.last_log()}", highlight=False, soft_wrap=True
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
    verbose: bool = VerboseOpt,
):
    """Train: check the recipe, normalize the data, run the backend, write the run folder."""
    from .core import run as run_job

    spec = _load(recipe, set_)
    with terminal.captured(not verbose):
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
    verbose: bool = VerboseOpt,
):
    """Continue an interrupted or crashed run from its newest complete checkpoint (same recipe, same data)."""
    from .core import resume as resume_job

    with terminal.captured(not verbose):
        outcome = resume_job(run_dir, overrides=set_ or [], force=force)
    _print_outcome(outcome)


def _print_outcome(outcome) -> None:
    losses = outcome.losses
    summary = f"{len(losses)} logged steps" + (
        f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    )
    out.print(f"[green]{outcome.status}[/] with {outcome.backend}: {summary}")
    evaluated = _recorded_eval(outcome.run_dir)
    for name in ("task", "retain"):
        if name in evaluated:
            base, tuned = evaluated[name]["base"], evaluated[name]["tuned"]
            out.print(f"eval ({name}): loss {base:.4f} -> {tuned:.4f}", highlight=False)
    if "reward" in evaluated:
        base, tuned = evaluated["reward"]["base"], evaluated["reward"]["tuned"]
        out.print(f"eval (held-out prompts): reward {base:.4f} -> {tuned:.4f}", highlight=False)
    if "pair_accuracy" in evaluated:
        out.print(f"eval (held-out pairs): pair accuracy {evaluated['pair_accuracy']:.0%}", highlight=False)
    out.print(f"run folder: {outcome.run_dir}")


def _recorded_eval(run_dir) -> dict:
    """eval.after_training's summary in run.json (empty when the run did not evaluate)."""
    from .runfolder import RunFolder

    try:
        return RunFolder(Path(run_dir)).read_record().get("eval") or {}
    except UserError:
        return {}


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
    show: int = typer.Option(
        0,
        "--show",
        min=0,
        help="Print the first N training rows as the trainer sees them, the trained tokens (the loss mask) "
        "marked [[like this]] (green on a terminal).",
    ),
):
    """Check the recipe, its data, the model folder and the backend, before anything runs (nothing written).

    Exit 2 when the recipe is wrong, or the chosen backend can never run it. What this machine lacks for it
    (a package, a GPU) is listed but does not fail: recipes for bigger machines validate anywhere. No torch
    is imported."""
    from .core import checked_backend, choose_backend
    from .data import prepare_data
    from .errors import BackendUnavailable
    from .evaluation import check_retain_sources

    spec = _load(recipe, set_)
    data = prepare_data(spec, read_hub=False)
    check_retain_sources(spec)
    requested = backend or spec.backend
    chosen = checked_backend(spec, requested, here=False)  # exit 2: that backend can never run this recipe
    if requested == "auto":
        with contextlib.suppress(BackendUnavailable):
            chosen = choose_backend(spec, "auto", here=True)  # prefer one that runs on this machine
    label = chosen.name if requested != "auto" else f"auto -> {chosen.name}"
    missing_here = chosen.check(spec, here=True)
    stats = note = None
    if tokens and data.train:  # before anything is printed: data that cannot train is an error, not "valid"
        from .data.tokens import check_trainable
        from .model_info import read_model_info

        stats, note = check_trainable(
            spec, data, read_model_info(spec.model.name_or_path, spec.model.revision)
        )
    out.print(f"[green]valid[/]: {recipe}")
    out.print(f"  model: {spec.model.name_or_path} ({spec.adapter.type}, {spec.training.method})")
    out.print(
        f"  data: {len(data.train)} train rows, {len(data.eval)} eval rows, {data.kind} ({', '.join(data.formats) or '-'})"
    )
    for skipped in data.skipped_sources:
        out.print(f"  [yellow]not read[/] (read through `datasets` when the job runs): {skipped}")
    out.print(f"  backend: {label}")
    for problem in missing_here:
        out.print(f"  [yellow]not runnable on this machine[/]: {escape(problem)}", highlight=False)
    if tokens and data.train:
        if stats is None:
            out.print(f"  tokens: not counted ({note})", highlight=False)
        else:
            q = stats.quantiles
            out.print(
                f"  tokens per row: min {q['min']}, median {q['median']}, p95 {q['p95']}, max {q['max']}; "
                f"{stats.truncated_rows} rows longer than max_seq_length {stats.max_seq_length}",
                highlight=False,
            )
            t = spec.training
            per_step = f"batch {t.per_device_batch_size} x accumulation {t.gradient_accumulation_steps}"
            if spec.compute.world_size > 1:
                per_step += f" x {spec.compute.world_size} processes"
            if (
                data.kind == "prompt"
            ):  # GRPO: nothing in the rows is trained on; the model answers each prompt
                g = t.grpo
                out.print(
                    f"  prompts: {stats.rows} per pass, each answered {g.num_generations} times (up to "
                    f"{g.max_completion_length} tokens); {stats.steps_per_epoch} optimizer steps per pass at {per_step} "
                    "completions",
                    highlight=False,
                )
            else:
                out.print(
                    f"  trained tokens: {stats.trained_tokens} per pass; {stats.steps_per_epoch} optimizer steps "
                    f"per pass at {per_step}; padding {stats.padding_fraction:.0%} unpacked, "
                    f"{stats.packed_padding_fraction:.0%} packed",
                    highlight=False,
                )
            if stats.template:
                out.print(f"  chat template: {stats.template}", highlight=False)
    for warning in data.warnings:
        out.print(f"  [yellow]warning[/]: {escape(warning)}", highlight=False)
    if show:
        _show_samples(spec, data, show)


def _show_samples(spec, data, count: int) -> None:
    """`validate --show N`: rendered rows with the trained tokens marked (the encoder's own tokens and mask)."""
    from rich.text import Text

    from .data.tokens import sample_spans

    if data.encoder is None:
        raise UserError(
            "--show: the rows could not be encoded here (the model's tokenizer is not readable)",
            hint="--show renders rows with the recipe's tokenizer and chat template",
        )
    marks = not out.is_terminal
    max_len = spec.model.max_seq_length
    rows = zip(data.encoded["train"][:count], data.train_locations[:count])
    for number, (encoded, where) in enumerate(rows, start=1):
        trained = sum(encoded.mask[:max_len])
        cut = encoded.length - min(encoded.length, max_len)
        cut_text = f", {cut} cut at max_seq_length" if cut else ""
        out.print(
            f"[bold]sample {number}[/] ({where}): {encoded.length} tokens, {trained} trained{cut_text}",
            highlight=False,
        )
        text = Text()
        for piece, is_trained in sample_spans(data.encoder.vocabulary, encoded, max_len):
            if is_trained:
                text.append(f"[[{piece}]]" if marks else piece, style="bold green")
            else:
                text.append(piece, style="dim")
        out.print(text, highlight=False, soft_wrap=True)


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
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only the program: no backend choice or memory estimate on stderr."
    ),
    launcher: str | None = typer.Option(
        None,
        "--launcher",
        help="slurm: an sbatch script that starts the job on every node; torchrun: one command per node. "
        "With --write DIR the files go into DIR.",
    ),
):
    """Print the exact native script or command a backend would run (nothing is run or written without --write).

    Standard output is the program only (`unify plan ... > job.sh`); the backend choice and the memory estimate
    per GPU go to standard error."""
    from .core import plan as make_plan

    if launcher is not None:
        _print_launch_files(recipe, backend, set_ or [], launcher, write, quiet)
        return
    if write is not None:
        from .running import prepare as prepare_run

        spec = _load(recipe, [*(set_ or []), f"output.dir={write.absolute()}"])
        with terminal.captured():
            folder, the_plan = prepare_run(spec, backend, recipe=str(recipe), quiet=True)
        err.print(f"wrote {folder.root}: `bash {folder.run_script}` trains", highlight=False, soft_wrap=True)
    else:
        spec = _load(recipe, set_)
        the_plan = make_plan(spec, backend)
    if not quiet:
        _print_plan_commentary(spec, backend or spec.backend, the_plan)
    if as_json:
        sys.stdout.write(json.dumps(the_plan.to_json(), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(the_plan.render().rstrip("\n") + "\n")


def _print_launch_files(
    recipe: Path, backend, overrides: list[str], launcher: str, write, quiet: bool
) -> None:
    from . import launchers
    from .core import checked_backend
    from .core import plan as make_plan

    spec = _load(recipe, overrides)
    chosen = checked_backend(spec, backend, here=False)
    files = launchers.launch_files(launcher, spec, chosen.name, recipe, overrides)
    if write is not None:
        for path in launchers.write(files, write):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if not quiet:
        _print_plan_commentary(spec, backend or spec.backend, make_plan(spec, chosen.name))
    sys.stdout.write(launchers.render(files))


def _print_plan_commentary(spec, requested: str, the_plan) -> None:
    from .memory import estimate_for, implied_choice

    chosen = f"auto -> {the_plan.backend}" if requested == "auto" else the_plan.backend
    err.print(f"backend: {chosen}", highlight=False, soft_wrap=True)
    estimate = estimate_for(spec)
    if estimate is None:
        err.print("memory estimate: the model's dimensions are not readable here", highlight=False)
        return
    for line in estimate.lines():
        err.print(line, highlight=False, soft_wrap=True)
    err.print(f"  {implied_choice(spec, estimate)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def prepare(recipe: Path = RecipeArg, backend: str | None = BackendOpt, set_: list[str] | None = SetOpt):
    """Write the run folder without training: normalized data, the backend's views, the native program and
    run.sh, so the command `unify plan` prints runs as is."""
    from .running import prepare as prepare_run

    with terminal.captured():
        folder, the_plan = prepare_run(_load(recipe, set_), backend, recipe=str(recipe))
    import shlex

    sets = "".join(f" --set {shlex.quote(item)}" for item in set_ or [])
    out.print(
        f"prepared {folder.root}; train with `bash {folder.run_script}` "
        f"(or `unify run {shlex.quote(str(recipe))} --backend {the_plan.backend}{sets}`)",
        highlight=False,
        soft_wrap=True,
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
    method: str = typer.Option(
        "sft",
        "--method",
        help="sft | dpo | kto | orpo | simpo | reward (grpo: copy recipes/tiny-cpu-grpo.yaml).",
    ),
    qlora: bool = typer.Option(False, "--qlora", help="QLoRA: LoRA on a 4-bit NF4 base (bitsandbytes)."),
):
    """Write a starter recipe (LoRA SFT on the built-in tiny model and data unless options say otherwise)."""
    from .starter import starter_recipe

    if path.exists() and not force:
        raise UserError(f"{path}: already exists", hint="pass --force to overwrite, or give another path")
    text = starter_recipe(model=model, data=data, data_format=data_format, method=method, qlora=qlora)
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}; check it with `unify validate {path}`")


@app.command("import")
@user_errors
def import_(
    config: Path = typer.Argument(..., help="A LLaMA-Factory or axolotl training YAML.", show_default=False),
    tool: str = typer.Option(..., "--from", help="llamafactory | axolotl.", show_default=False),
    output: Path = typer.Option(Path("recipe.yaml"), "--output", "-o", help="Where to write the recipe."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Write a unifier recipe from another tool's training config, listing what could not be translated."""
    from .importing import import_file
    from .spec import spec_from_dict

    if output.exists() and config.exists() and output.resolve() == config.resolve():
        raise UserError(f"--output {output} is the file being imported", hint="give another --output")
    if output.is_dir():
        raise UserError(f"--output {output}: a folder", hint="give a file name, e.g. --output recipe.yaml")
    if output.exists() and not force:
        raise UserError(
            f"{output}: already exists", hint="pass --force to overwrite, or give another --output"
        )
    if not output.absolute().parent.is_dir():
        raise UserError(f"--output {output}: the folder {output.absolute().parent} does not exist")
    imported = import_file(config, tool)
    spec_from_dict(imported.recipe, source=f"the recipe imported from {config}")  # nothing written if invalid
    try:
        output.write_text(imported.text(str(config), tool), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write ({exc.strerror or exc})") from None
    for note in imported.notes:
        err.print(f"  note: {escape(note)}", highlight=False, soft_wrap=True)
    for item in imported.untranslated:
        err.print(f"  [yellow]not translated[/]: {escape(item)}", highlight=False, soft_wrap=True)
    out.print(f"wrote {output}; check it with `unify validate {output}`")


@app.command()
@user_errors
def demo(
    backend: str = typer.Option("peft", "--backend", "-b", help="Backend to run the demo with."),
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Run folder (overwritten)."),
):
    """Build the tiny local model, fine-tune it with LoRA on CPU, show the loss falling and a generation."""
    from .demo import run_demo

    with terminal.captured():
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


RunDirArg = typer.Argument(..., help="A completed run folder (any backend).", show_default=False)


@app.command()
@user_errors
def chat(
    run_dir: Path | None = typer.Argument(
        None, help="A completed run folder (any backend).", show_default=False
    ),
    model: str | None = typer.Option(None, "--model", help="Chat with a base model instead of a run."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Answer this once and exit (scriptable)."),
    system: str | None = typer.Option(None, "--system", help="A system message."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    temperature: float = typer.Option(
        0.0, "--temperature", min=0.0, help="0: greedy (the same answer every time)."
    ),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed"),
    tools: Path | None = typer.Option(
        None, "--tools", help="A JSON file with the tool definitions (OpenAI style) the model may call."
    ),
):
    """Talk to a trained run (base + adapter, the run's chat template), or to a base model with --model.

    Interactive: /reset clears the conversation, /system TEXT sets the system message, /exit leaves. With
    --tools, the tool calls in an answer are printed parsed (on stderr with --prompt)."""
    from .trained import TrainedRun, generate, load_model

    if (run_dir is None) == (model is None):
        raise UserError("give a run folder or --model NAME_OR_PATH (one of them)")
    if prompt is not None and not prompt.strip():
        raise UserError("--prompt is empty: give the message to answer, or leave --prompt out to chat")
    settings = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, tools=_tools(tools)
    )
    start = [{"role": "system", "content": system}] if system else []
    with terminal.captured():  # the libraries' output goes to a temporary log; answers to the terminal
        run = TrainedRun.open(run_dir) if run_dir is not None else None
        loaded, tokenizer = load_model(run, model_ref=model)
        if prompt is not None:
            answer = generate(loaded, tokenizer, [*start, {"role": "user", "content": prompt}], **settings)
            terminal.stdout().write(answer + "\n")
            _print_tool_calls(answer, terminal.stderr())
            return
        _chat_loop(loaded, tokenizer, start, settings)


def _tools(path: Path | None) -> list[dict] | None:
    """--tools FILE: a JSON list of tool definitions (or {"tools": [...]}, a row of tool-calling data)."""
    if path is None:
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"--tools {path}: not a readable JSON file ({exc})") from None
    value = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise UserError(f"--tools {path}: expected a JSON list of tool definitions")
    return value


def _print_tool_calls(answer: str, stream) -> None:
    from .trained import parse_tool_calls

    for call in parse_tool_calls(answer):
        if "unparsed" in call:
            stream.write(f"tool call (not valid JSON): {call['unparsed']}\n")
        else:
            stream.write(f"tool call: {call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}\n")


def _chat_loop(loaded, tokenizer, start: list[dict], settings: dict) -> None:
    from transformers import TextStreamer

    from .trained import generate

    class TerminalStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            terminal.stdout().write(text + ("\n" if stream_end else ""))
            terminal.stdout().flush()

    screen = terminal.stdout()
    screen.write("chat: /reset clears, /system TEXT sets the system message, /exit leaves\n")
    conversation = list(start)
    while True:
        screen.write("you> ")
        screen.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            break
        if not line or line.strip() == "/exit":
            screen.write("\n" if not line else "")
            break
        line = line.rstrip("\n")
        command = line.strip()
        if not command:
            continue
        if command == "/reset":
            conversation = list(start)
            continue
        if command.startswith("/system"):
            text = command[len("/system") :].strip()
            if not text:
                screen.write("usage: /system TEXT\n")
                continue
            start = [{"role": "system", "content": text}]
            conversation = [*start, *[m for m in conversation if m["role"] != "system"]]
            continue
        if command.startswith("/"):
            screen.write(f"unknown command {command.split()[0]} (commands: /reset, /system TEXT, /exit)\n")
            continue
        conversation.append({"role": "user", "content": line})
        screen.write("model> ")
        streamer = TerminalStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        answer = generate(loaded, tokenizer, conversation, streamer=streamer, **settings)
        conversation.append({"role": "assistant", "content": answer})
        _print_tool_calls(answer, screen)


@app.command("eval")
@user_errors
def eval_(
    run_dir: Path = RunDirArg,
    data: list[Path] | None = typer.Option(
        None, "--data", help="Held-out rows (default: the run's eval data)."
    ),
    retain: list[Path] | None = typer.Option(
        None, "--retain", help="Rows of what the model should not forget (not the training task)."
    ),
    samples: int = typer.Option(
        3, "--samples", min=0, help="Greedy answers of base and tuned for N prompts."
    ),
    max_retain_increase: float = typer.Option(
        0.10,
        "--max-retain-increase",
        min=0.0,
        help="Warn when the retain loss rises more than this (relative).",
    ),
    benchmark: list[str] | None = typer.Option(
        None,
        "--benchmark",
        help="An EvalScope benchmark on local data, base vs tuned: general_qa=FILE.jsonl (query/response "
        "rows; pip install 'unifier[eval]').",
    ),
    force: bool = typer.Option(False, "--force", help="Replace the run's earlier eval/ (unifier wrote it)."),
):
    """Held-out loss and perplexity, base vs tuned; a forgetting check on --retain data; answers side by side.
    Writes RUN_DIR/eval/ (eval.json, samples.jsonl, eval.png)."""
    from .evaluation import evaluate

    benchmarks = {}
    for item in benchmark or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--benchmark {item!r}: expected NAME=FILE, e.g. general_qa=qa.jsonl")
        benchmarks[name] = path
    with terminal.captured():
        report = evaluate(
            run_dir,
            benchmarks=benchmarks,
            data=[str(p) for p in data] if data else None,
            retain=[str(p) for p in retain] if retain else None,
            samples=samples,
            max_retain_increase=max_retain_increase,
            replace=force,
        )
    _print_eval(report)


def _print_eval(report: dict) -> None:
    title = f"eval of {report['run']} ({report['backend']})"
    if "task" in report or "retain" in report:
        table = Table(title=title)
        for column in ("set", "base loss", "tuned loss", "base ppl", "tuned ppl", "tokens"):
            table.add_column(column, justify="right" if column != "set" else "left")
        for name in ("task", "retain"):
            if name in report:
                base, tuned = report[name]["base"], report[name]["tuned"]
                table.add_row(
                    name,
                    f"{base['loss']:.4f}",
                    f"{tuned['loss']:.4f}",
                    f"{base['perplexity']:.2f}",
                    f"{tuned['perplexity']:.2f}",
                    str(tuned["tokens"]),
                )
        out.print(table)
    _print_method_scores(report, title)
    retain = report.get("retain")
    if retain:
        change = f"retain loss {retain['relative_increase']:+.1%}"
        if retain["forgetting"]:
            err.print(
                f"[yellow]warning:[/] forgetting: {change} (more than "
                f"{report['settings']['max_retain_increase']:.0%})",
                highlight=False,
            )
        else:
            out.print(change, highlight=False)
    if report.get("benchmarks"):
        table = Table(title="EvalScope benchmarks (local data)")
        for column in ("benchmark", "metric", "base", "tuned"):
            table.add_column(column, justify="right" if column in ("base", "tuned") else "left")
        for name, result in report["benchmarks"].items():
            table.add_row(name, result["metric"], f"{result['base']:.4f}", f"{result['tuned']:.4f}")
        out.print(table)
    folder = Path(report["run"]) / "eval"
    written = [
        name for name in ("eval.json", "samples.jsonl", "eval.png", "eval.log") if (folder / name).is_file()
    ]
    out.print(f"wrote {folder} ({', '.join(written)})", highlight=False)


def _print_method_scores(report: dict, title: str) -> None:
    """Preference pairs' log-prob ranking, GRPO's held-out rewards, a reward model's score-head ranking."""
    task = report.get("task", {"tuned": {}})
    if "preference_accuracy" in task["tuned"]:
        out.print(
            f"preference pairs: chosen likelier than rejected {task['base']['preference_accuracy']:.0%} -> "
            f"{task['tuned']['preference_accuracy']:.0%}; mean log-prob margin "
            f"{task['base']['preference_margin']:+.3f} -> {task['tuned']['preference_margin']:+.3f}",
            highlight=False,
        )
    rewards = report.get("rewards")
    if rewards:
        table = Table(title=f"{title}: rewards of greedy answers")
        for column in ("mean", "base", "tuned"):
            table.add_column(column, justify="right" if column != "mean" else "left")
        names = [k for k in rewards["tuned"] if k == "reward" or k.startswith("rewards/")]
        for name in [*names, "completions/mean_length"]:
            cells = [rewards[which][name] for which in ("base", "tuned")]
            table.add_row(name, *("-" if v is None else f"{v:.4f}" for v in cells))
        out.print(table)
        base, tuned = rewards["base"]["reward"], rewards["tuned"]["reward"]
        out.print(
            f"{rewards['tuned']['prompts']} held-out prompts: reward {base:.4f} -> {tuned:.4f}",
            highlight=False,
        )
    pairs = report.get("pairs")
    if pairs:
        tuned = pairs["tuned"]
        out.print(title, highlight=False)
        out.print(
            f"score head: chosen first in {tuned['pair_accuracy']:.0%} of {tuned['pairs']} held-out pairs "
            f"(margin {tuned['margin']:+.3f}, loss {tuned['loss']:.4f})",
            highlight=False,
        )


@app.command()
@user_errors
def export(
    run_dir: Path = RunDirArg,
    fmt: str = typer.Option("merged", "--format", help="merged (safetensors) | gguf (llama.cpp)."),
    quant: str | None = typer.Option(None, "--quant", help="gguf: f32 | f16 | bf16 | q8_0 (default q8_0)."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 | bfloat16 | float16 (default: model.dtype)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default: RUN_DIR/export/<format>/."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export unifier wrote."),
):
    """Write the run's model for serving: the base with the adapter merged in, as the backends merge it."""
    from .exporting import export as export_run

    if quant is not None and fmt != "gguf":
        raise UserError(
            f"--quant {quant}: applies to --format gguf only; a {fmt} export is written in model.dtype or --dtype",
            hint="drop --quant, or pass --format gguf",
        )
    quant = quant or "q8_0"
    with terminal.captured():
        target = export_run(run_dir, fmt, output=output, dtype=dtype, quant=quant, force=force)
    out.print(f"wrote {target}", highlight=False)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
