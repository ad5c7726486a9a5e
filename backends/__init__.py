"""Backend registry: adding a backend means adding one module and one entry here."""
from __future__ import annotations

import importlib

from unifier.errors import UserError

# name -> module that defines BACKEND (the order `unify backends` lists them in; `backend: auto`
# chooses in unifier.core.choose_backend)
REGISTRY = {"unsloth": "unsloth", "peft": "peft", "swift": "swift"}


def get_backend(name: str):
    if name not in REGISTRY:
        raise UserError(f"unknown backend '{name}'", hint=f"choose one of: {', '.join(REGISTRY)}, auto")
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}").BACKEND


def all_backends():
    return [get_backend(name) for name in REGISTRY]
