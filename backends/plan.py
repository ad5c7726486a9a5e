"""The closed plan: everything one backend run needs, as typed, printable values.

A plan is built by a backend's pure translation of the spec (backends/base.py) and is the only thing
`Backend.run(plan)` receives: the program to run (a Python program with its CONFIG, or a command line
with its environment), the data views it reads, the callbacks unifier attaches, and the steps unifier
runs after training (collecting a checkpoint, merging, checking ranks). `unify plan` prints it;
`unify plan --json` shows every field.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScriptProgram:
    """A Python training program: `source` is the standalone script (CONFIG filled in) that `unify plan`
    prints; unifier calls `entry` (module:function) on the same `config` in-process."""

    entry: str
    config: dict[str, Any]
    source: str
    path: str  # where the run folder keeps the printed script (native/)
    # several processes: torchrun's flags on this node (the script runs as `python -m torch.distributed.run
    # <launcher> <path>` on every node, each with its own --node_rank)
    launcher: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """How the printed script is started (on this node)."""
        if self.launcher:
            return ["python", "-m", "torch.distributed.run", *self.launcher, self.path]
        return ["python", self.path]

    def render(self) -> str:
        if not self.launcher:
            return self.source
        launch = " ".join(shell_word(part) for part in self.command())
        return f"# several processes: {launch}\n" + self.source


@dataclass(frozen=True)
class CommandProgram:
    """A command line (argv[0] is the executable) and the environment it needs. `in_process` names the Python
    entry point (module:function taking argv[2:]) unifier calls instead when one process trains."""

    argv: tuple[str, ...]
    env: dict[str, str]
    path: str  # where the run folder keeps the printed command (native/)
    in_process: str | None = None

    def render(self) -> str:
        prefix = " ".join(f"{k}={shell_word(v)}" for k, v in self.env.items())
        head = " ".join([prefix, *map(shell_word, self.argv[:2])]).strip()
        lines = [
            " ".join(shell_word(p) for p in [flag, *values]) for flag, values in grouped_flags(self.argv[2:])
        ]
        return " \\\n    ".join([head, *lines]) + "\n"


def shell_word(value: str) -> str:
    """A shell word for `value`; a `${NAME}` reference stays one the shell expands (a secret is never printed)."""
    if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
        return f'"{value}"'
    return shlex.quote(value)


Program = ScriptProgram | CommandProgram


@dataclass(frozen=True)
class DataView:
    """A file derived from the canonical rows for one backend (e.g. ms-swift's messages layout)."""

    split: str
    source: str  # canonical rows (data/<split>.jsonl)
    path: str
    layout: str  # the name of the row conversion, owned by the backend that reads it


@dataclass(frozen=True)
class CollectCheckpoint:
    """The newest checkpoint becomes adapter/ (or model/), with the tokenizer files and the chat template."""

    run_dir: str
    target: str
    tokenizer_from: str | None
    chat_template: str | None
    kind: str = "collect_checkpoint"


@dataclass(frozen=True)
class MergeAdapter:
    """The base model in `dtype` with the adapter merged in (never re-quantized), the same on every backend."""

    base: str
    revision: str | None
    trust_remote_code: bool
    dtype: str
    adapter_dir: str
    merged_dir: str
    kind: str = "merge_adapter"


@dataclass(frozen=True)
class CheckRanks:
    """Every rank of a multi-process run reported the same trainable-weight digest (one model, not copies)."""

    ranks_dir: str
    expected_ranks: int | None
    world_size: int
    kind: str = "check_ranks"


AfterStep = CollectCheckpoint | MergeAdapter | CheckRanks


@dataclass(frozen=True)
class Plan:
    backend: str
    run_dir: str
    data_kind: str  # chat | text | preference
    program: Program
    data_views: tuple[DataView, ...] = ()
    callbacks: tuple[str, ...] = ()  # unifier callbacks attached to the trainer (backends/hf_callbacks.py)
    after_training: tuple[AfterStep, ...] = ()
    notes: tuple[
        str, ...
    ] = ()  # what a reader of the plan should know (dynamic 4-bit twin, resolved modules...)
    resume_from: str | None = None
    world_size: int = 1
    environment: dict[str, str] = field(default_factory=dict)  # set in unifier's process before the run

    def render(self) -> str:
        """The native program, then what unifier does around it, as comments (valid in Python and shell)."""
        header = [f"# {note}" for note in self.notes]
        for view in self.data_views:
            header.append(
                f"# reads {view.path} ({view.layout} view of {view.source}, written by `unify prepare`)"
            )
        footer = [f"# then unifier {describe_step(step)}" for step in self.after_training]
        text = self.program.render().rstrip("\n") + "\n"
        return "".join(line + "\n" for line in header) + text + "".join(line + "\n" for line in footer)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["program"] = {"type": type(self.program).__name__, **asdict(self.program)}
        if isinstance(self.program, ScriptProgram):
            body["program"].pop("source")  # the script is the render; its CONFIG is here
        return json.loads(json.dumps(body, default=str))


def describe_step(step: AfterStep) -> str:
    if isinstance(step, CollectCheckpoint):
        return f"copies the newest checkpoint to {step.target} (+ tokenizer)"
    if isinstance(step, MergeAdapter):
        return (
            f"merges adapter/ into the base model in {step.dtype} (peft merge_and_unload, never re-quantized) -> "
            f"{step.merged_dir}, as every backend does"
        )
    return f"checks that all {step.world_size} ranks ended with identical weights"


def grouped_flags(argv: tuple[str, ...] | list[str]) -> list[tuple[str, list[str]]]:
    """['--a', '1', '--b', 'x', 'y'] -> [('--a', ['1']), ('--b', ['x', 'y'])]"""
    groups: list[tuple[str, list[str]]] = []
    for part in argv:
        if part.startswith("--") or not groups:
            groups.append((part, []))
        else:
            groups[-1][1].append(part)
    return groups
