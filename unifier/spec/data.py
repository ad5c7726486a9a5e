"""`data:` where training examples come from and how they are read."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .. import builtin
from .base import Section

DataFormat = Literal["auto", "alpaca", "sharegpt", "messages", "text", "preference", "prompt", "unpaired"]


class DataSource(Section):
    path: str = Field(
        description="A local .json/.jsonl/.csv/.parquet file (relative to the recipe), a datasets hub name, "
        "or 'builtin:tiny-chat' for the bundled chat data."
    )
    format: DataFormat = Field("auto", description="Row format; 'auto' detects it from the first row's keys.")
    split: str = Field("train", description="Split to read for a hub dataset.")
    subset: str | None = Field(None, description="Configuration name for a hub dataset.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map from the format's column names to this file's.",
        examples=[{"instruction": "question", "output": "answer"}],
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="sharegpt: map from this file's role names to user/assistant/system/tool "
        "(defaults: human->user, gpt->assistant, system->system, function_call->assistant, observation->tool).",
    )
    max_rows: int | None = Field(None, gt=0, description="Read at most this many rows.")
    extra_columns: Literal["error", "ignore"] = Field(
        "error",
        description="A column the format does not read (an id, a KTO label, a score): error (the default: "
        "nothing is dropped silently), or ignore (leave such columns out).",
    )

    @field_validator("path")
    @classmethod
    def _known_builtin(cls, value: str) -> str:
        problem = builtin.unknown_builtin(value)
        if problem:
            raise ValueError(problem)
        if builtin.is_builtin(value) and value.removeprefix(builtin.PREFIX) not in builtin.BUILTIN_DATA:
            raise ValueError(f"'{value}' is a built-in model, not a data set")
        return value


class DataSpec(Section):
    train: list[DataSource] = Field(min_length=1, description="Training sources, concatenated in order.")
    eval: list[DataSource] = Field(default_factory=list, description="Evaluation sources.")
    eval_split: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the training rows held out for eval when data.eval is empty.",
    )
    shuffle: bool = Field(
        True,
        description="Shuffle the training rows once, with data.seed, when unifier writes the normalized file. "
        "Every backend then trains in file order with its own shuffling off.",
    )
    seed: int = Field(42, ge=0, lt=2**32, description="Seed for the shuffle and the eval split.")
    packing: bool = Field(False, description="Pack several samples into each max_seq_length sequence.")
    assistant_only_loss: bool = Field(
        True, description="Chat data: loss on assistant turns only (false: on every token)."
    )
    empty_content: Literal["warn", "error"] = Field(
        "warn",
        description="A turn with empty content (and no tool calls): warn (file:row, then train), or error.",
    )

    @model_validator(mode="after")
    def _eval_sources_or_split(self):
        if self.eval and self.eval_split:
            raise ValueError("set data.eval or data.eval_split, not both")
        return self
