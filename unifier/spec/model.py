"""`model:` which base model to load and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .. import builtin
from .base import Section

Dtype = Literal["float32", "bfloat16", "float16"]


class ModelSpec(Section):
    name_or_path: str = Field(
        description="Hub name (e.g. Qwen/Qwen3-8B), a local folder, or 'builtin:tiny-qwen2' for the "
        "tiny model unifier builds locally (no download)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to load.")
    dtype: Dtype = Field(
        "bfloat16", description="Dtype for the weights that are not quantized, and for training precision."
    )
    max_seq_length: int = Field(
        2048, gt=0, le=2**20, description="Samples are truncated to this many tokens (right truncation)."
    )
    trust_remote_code: bool = Field(False, description="Allow the model repository's own Python code to run.")
    chat_template: str = Field(
        "auto",
        description="The chat format chat rows train in (unifier renders and masks every row itself, the same "
        "tokens on every backend): 'auto' (the model's own template, as vLLM/llama.cpp/apply_chat_template "
        "serve it; unifier's ChatML for a model without one), 'tokenizer' (the model's own, required), "
        "'chatml' (unifier's ChatML; refused when its tags are not tokens of the vocabulary), or a path to "
        "a .jinja file.",
    )

    @field_validator("name_or_path")
    @classmethod
    def _known_builtin(cls, value: str) -> str:
        problem = builtin.unknown_builtin(value)
        if problem:
            raise ValueError(problem)
        if builtin.is_builtin(value) and value.removeprefix(builtin.PREFIX) not in builtin.BUILTIN_MODELS:
            raise ValueError(f"'{value}' is a built-in data set, not a model")
        return value

    @field_validator("chat_template")
    @classmethod
    def _template_choice(cls, value: str) -> str:
        if value in ("auto", "chatml", "tokenizer") or value.endswith(".jinja"):
            return value
        raise ValueError(
            f"expected one of auto, chatml, tokenizer, or a path to a .jinja file (got '{value}')"
        )
