"""The one list of backends: name, module, pip extra, auto-selection priority, description.

Everything that names a backend reads this list: the spec (`backend:` and `backend_options:`), `backend:
auto`, the CLI help, `unify backends`, `unify compare`'s defaults and the conformance tests. Adding a
backend is one module that defines `BACKEND_CLASS` (a `unifier.backends.base.Backend`) and one entry
here. Importing this module is cheap: backend modules are imported only when a backend is looked up.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str  # importable module path that defines BACKEND_CLASS
    pip_extra: str  # `pip install 'unifier[<extra>]'` installs what it needs
    description: str
    # backend: auto tries backends in ascending priority for the device the job trains on ("cpu" / "cuda"), and
    # "several" for a job of more than one process
    auto_priority: dict[str, int] = field(default_factory=dict)

    def priority(self, device: str, several: bool = False) -> int:
        if several and "several" in self.auto_priority:
            return self.auto_priority["several"]
        return self.auto_priority.get(device, 1000)


class Registry:
    """An ordered set of backend entries and their (lazily created, cached) backend objects."""

    def __init__(self, entries: list[BackendEntry]):
        names = [entry.name for entry in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate backend names in {names}")
        self._entries = {entry.name: entry for entry in entries}
        self._backends: dict = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> list[BackendEntry]:
        return list(self._entries.values())

    def entry(self, name: str) -> BackendEntry:
        if name not in self._entries:
            from unifier.errors import UserError

            raise UserError(
                f"unknown backend '{name}'", hint=f"choose one of: {', '.join(self._entries)}, auto"
            )
        return self._entries[name]

    def backend(self, name: str):
        entry = self.entry(name)
        if name not in self._backends:
            module = importlib.import_module(entry.module)
            self._backends[name] = module.BACKEND_CLASS(entry)
        return self._backends[name]

    def auto_order(self, device: str, several: bool = False) -> list[str]:
        """Backends in the order `backend: auto` tries them on this device, for one process or several (stable
        for equal priorities)."""
        return [e.name for e in sorted(self._entries.values(), key=lambda e: e.priority(device, several))]


BUILTIN = Registry(
    [
        BackendEntry(
            name="peft",
            module="unifier.backends.peft",
            pip_extra="peft",
            description="transformers + peft + trl (SFTTrainer / DPOTrainer), the reference implementation",
            auto_priority={"cpu": 0, "cuda": 1},
        ),
        BackendEntry(
            name="swift",
            module="unifier.backends.swift",
            pip_extra="swift",
            description="ms-swift 4.x (swift sft / swift rlhf): torchrun, DeepSpeed ZeRO-2/3, FSDP2, multi-node",
            auto_priority={"cpu": 2, "cuda": 2, "several": -1},  # the engine that scales out
        ),
        BackendEntry(
            name="unsloth",
            module="unifier.backends.unsloth",
            pip_extra="unsloth",
            description="unsloth FastLanguageModel + trl: fastest single-GPU LoRA/QLoRA, dynamic 4-bit checkpoints",
            auto_priority={"cpu": 1, "cuda": 0},
        ),
    ]
)

_active: list[Registry] = [BUILTIN]


def active() -> Registry:
    """The registry in use (the built-in one, unless a test swapped it with `using`)."""
    return _active[-1]


@contextlib.contextmanager
def using(registry: Registry) -> Iterator[Registry]:
    """Use another registry for the duration of a block (tests register a fourth backend this way)."""
    _active.append(registry)
    try:
        yield registry
    finally:
        _active.pop()


def get_backend(name: str):
    return active().backend(name)


def all_backends() -> list:
    return [active().backend(name) for name in active().names()]
