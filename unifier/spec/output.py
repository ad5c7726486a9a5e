"""`output:` where the run folder goes and what it keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class OutputSpec(Section):
    dir: str = Field(
        "runs/{name}",
        description="Run folder; '{name}' and '{backend}' are filled in. Relative to the current directory.",
    )
    if_exists: Literal["error", "overwrite"] = Field(
        "error", description="What to do when the run folder already exists."
    )
    save: Literal["adapter", "merged", "both"] = Field(
        "adapter",
        description="adapter: the PEFT adapter only; merged: the base model with the adapter merged in; both.",
    )
    probe: bool = Field(
        False,
        description="Record what the trainer really trains on (first tokenized samples with labels, trainable "
        "parameter names and initial weights) under probe/, for `unify compare` and the parity tests.",
    )
