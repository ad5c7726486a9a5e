"""`output:` where the run folder goes and what it keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section

PLACEHOLDERS = ("name", "backend")


class OutputSpec(Section):
    dir: str = Field(
        "runs/{name}",
        description="Run folder; '{name}' and '{backend}' are filled in. Relative to the current directory.",
    )
    if_exists: Literal["error", "overwrite"] = Field(
        "error",
        description="What to do when the run folder already exists: error, or overwrite (only a folder unifier "
        "wrote, only what unifier wrote in it, and never a resumable run's checkpoints without "
        "--discard-checkpoints; `unify resume` continues such a run).",
    )
    save: Literal["adapter", "merged", "both"] = Field(
        "adapter",
        description="adapter: the PEFT adapter only; merged: the base model with the adapter merged in; both.",
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "swanlab", "trackio"]] = Field(
        default_factory=list,
        description="Experiment trackers (the trainer's own integrations, on every backend); their local files "
        "go to logs/ in the run folder (logs/tensorboard, logs/wandb, ...). The tracker's package must be "
        "installed.",
        examples=[["tensorboard"], ["tensorboard", "wandb"]],
    )
    probe: bool = Field(
        False,
        description="Record what the trainer really trains on (first tokenized samples with labels, trainable "
        "parameter names and initial weights) under probe/, for `unify compare` and the parity tests.",
    )

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]} is listed twice; name each tracker once")
        return value

    @field_validator("dir")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        import string

        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError:
            raise ValueError(
                f"'{value}' has a lone '{{' or '}}': the placeholders are {{name}} and {{backend}} "
                "(write {{ or }} for a literal brace)"
            ) from None
        unknown = [name for name in fields if name not in PLACEHOLDERS]
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} in '{value}'; use {{name}} or {{backend}}"
            )
        if not value.strip():
            raise ValueError("must name a folder")
        return value
