"""`builtin:NAME` references: the one place that knows what unifier ships and where it lives.

`builtin:tiny-qwen2` is the tiny model unifier builds locally (unifier/tiny.py) into the cache folder;
`builtin:tiny-chat` and the other data sets are files in unifier/assets/. Everything else (spec
validation, data readers, backends, planning) asks this module, never the prefix itself.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "builtin:"
ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_MODELS = ("tiny-qwen2",)
BUILTIN_DATA = {
    "tiny-chat": "tiny_chat.jsonl",
    "tiny-preference": "tiny_preference.jsonl",
    "tiny-kto": "tiny_kto.jsonl",  # the preference pairs as single answers with a label (messages + label)
    "tiny-prompts": "tiny_prompts.jsonl",  # additions with their answers: GRPO prompts (recipes/tiny-cpu-grpo.yaml)
    "tiny-retain": "tiny_retain.jsonl",  # general questions, not the tiny chat task: `unify eval --retain`
}
TINY_MODEL_REF = PREFIX + "tiny-qwen2"


def is_builtin(ref: str) -> bool:
    return ref.startswith(PREFIX)


def cache_root() -> Path:
    """Where unifier keeps what it builds (the tiny model, unsloth's compiled cache): $UNIFIER_CACHE."""
    return Path(os.environ.get("UNIFIER_CACHE", Path.home() / ".cache" / "unifier"))


def unknown_builtin(ref: str) -> str | None:
    """A message when `ref` is a builtin: reference to nothing unifier ships, else None."""
    if not is_builtin(ref):
        return None
    name = ref.removeprefix(PREFIX)
    if name in BUILTIN_MODELS or name in BUILTIN_DATA:
        return None
    known = ", ".join(PREFIX + n for n in (*BUILTIN_MODELS, *BUILTIN_DATA))
    return f"unknown built-in '{ref}' (known: {known})"


def model_location(ref: str) -> str:
    """A model reference as the libraries load it: builtin models map to their local folder (a pure function:
    nothing is built here; `ensure_model` builds)."""
    if ref == TINY_MODEL_REF:
        from .tiny import tiny_model_dir

        return str(tiny_model_dir())
    return ref


def ensure_model(ref: str) -> None:
    """Build a builtin model if it is not in the cache yet (imports torch); a no-op for anything else."""
    if ref == TINY_MODEL_REF:
        from .tiny import ensure_tiny_model

        ensure_tiny_model()


def data_file(ref: str) -> Path:
    name = ref.removeprefix(PREFIX)
    if name not in BUILTIN_DATA:
        from .errors import UserError

        raise UserError(unknown_builtin(ref) or f"'{ref}' is a model, not a data set")
    return ASSETS / BUILTIN_DATA[name]


def chatml_template_file() -> Path:
    return ASSETS / "chatml.jinja"


def chat_template_path(choice: str) -> str | None:
    """model.chat_template as a file: unifier's ChatML, None for the tokenizer's own, or the recipe's .jinja."""
    if choice == "chatml":
        return str(chatml_template_file())
    if choice in ("tokenizer", "auto"):
        return None
    return choice  # a .jinja path, made absolute when the recipe was loaded
