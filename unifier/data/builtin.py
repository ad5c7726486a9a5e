"""Data bundled with unifier, addressed as 'builtin:NAME'."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN_DATA = {"tiny-chat": "tiny_chat.jsonl", "tiny-preference": "tiny_preference.jsonl"}


def builtin_data_path(ref: str) -> Path:
    name = ref.removeprefix("builtin:")
    if name not in BUILTIN_DATA:
        raise UserError(f"unknown built-in data set '{ref}'", hint=f"known: {', '.join('builtin:' + n for n in BUILTIN_DATA)}")
    return ASSETS / BUILTIN_DATA[name]
