"""`eval:` what `unify run` evaluates when training ends (the same report as `unify eval RUN_DIR`)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class EvalSpec(Section):
    after_training: bool = Field(
        False,
        description="Run `unify eval` on the finished run: base vs tuned loss on the eval data, the forgetting "
        "check on eval.retain, samples; written to eval/ and summarized in run.json. A failing eval is a "
        "warning, not a failed run.",
    )
    retain: list[str] = Field(
        default_factory=list,
        description="Data that is not the training task, for the forgetting check (files, relative to the "
        "recipe, or builtin:tiny-retain).",
        examples=[["builtin:tiny-retain"]],
    )
    max_retain_increase: float = Field(
        0.10,
        ge=0,
        le=100,
        description="Warn when the tuned model's retain loss rises more than this (relative).",
    )
    samples: int = Field(
        3, ge=0, le=1000, description="Base and tuned answers written for this many eval prompts."
    )
