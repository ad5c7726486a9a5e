"""The surface every backend implements: capabilities, check, plan, run.

check() and plan() import nothing heavy: they read the spec and the capability table only, so
`unify validate`, `unify plan` and `unify backends` stay fast. run() does the heavy imports.

check(spec, here=True) answers "can this backend run the spec on this machine?" (missing packages, no GPU
included); check(spec, here=False) answers only "can this backend ever run the spec?", which is what
`unify plan` needs to choose a backend for a recipe meant for another machine.
"""
from __future__ import annotations

import importlib.util
import json
import pprint
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from unifier.spec import JobSpec

STEPS = Path(__file__).with_name("trl_steps.py")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; checked against a spec before anything heavy is imported."""

    adapters: tuple[str, ...] = ("lora", "qlora", "full")
    quant_bits: tuple[int, ...] = (4, 8)
    methods: tuple[str, ...] = ("sft", "dpo")
    data_kinds: tuple[str, ...] = ("chat", "text", "preference")
    strategies: tuple[str, ...] = ("ddp",)
    max_processes: int | None = None  # None: no limit
    multi_node: bool = False
    dora: bool = True
    rslora: bool = True
    packing: bool = True
    notes: tuple[str, ...] = ()

    def as_rows(self) -> dict[str, str]:
        procs = "any" if self.max_processes is None else str(self.max_processes)
        return {
            "adapters": ", ".join(self.adapters),
            "quantization": ", ".join(f"{b}-bit" for b in self.quant_bits) or "none",
            "methods": ", ".join(self.methods),
            "distributed": f"{', '.join(self.strategies)}; processes: {procs}; multi-node: {'yes' if self.multi_node else 'no'}",
            "dora / rslora": f"{'yes' if self.dora else 'no'} / {'yes' if self.rslora else 'no'}",
            "packing": "yes" if self.packing else "no",
        }


@dataclass
class Plan:
    """A pure translation of a spec for one backend: printable, testable, runnable."""

    backend: str
    run_dir: str
    kind: str  # "python" (call arguments + a standalone script) or "command" (argv + environment)
    payload: dict[str, Any]
    script: str = ""  # the standalone program or shell command a user can run without unifier

    def render(self) -> str:
        return self.script

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "kind": self.kind, "payload": self.payload}


@dataclass
class RunResult:
    native_command: str
    backend_details: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    description: str
    requires: tuple[str, ...]  # importable module names the backend needs
    pip_extra: str
    capabilities: Capabilities

    def check(self, spec: JobSpec, here: bool = True) -> list[str]: ...

    def plan(self, spec: JobSpec, run_dir: str) -> Plan: ...

    def run(self, plan: Plan, spec: JobSpec) -> RunResult: ...


def missing_packages(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def machine_problems(spec: JobSpec, modules: tuple[str, ...], extra: str) -> list[str]:
    """What this machine lacks for the spec: the backend's packages, and a GPU when the spec asks for one."""
    from .hf_args import cuda_visible

    problems = []
    missing = missing_packages(modules)
    if missing:
        problems.append(f"missing packages: {', '.join(missing)} (pip install 'unifier[{extra}]')")
    if spec.compute.device == "cuda" and not cuda_visible():
        problems.append("compute.device is 'cuda' but no CUDA device is visible on this machine "
                        "(set compute.device: auto or cpu to train here)")
    return problems


def capability_problems(spec: JobSpec, caps: Capabilities, backend: str) -> list[str]:
    """Everything in the spec this backend's capability table rules out."""
    problems = []
    if spec.adapter.type not in caps.adapters:
        problems.append(f"adapter.type '{spec.adapter.type}' is not supported by {backend} (supported: {', '.join(caps.adapters)})")
    if spec.quantization.bits is not None and spec.quantization.bits not in caps.quant_bits:
        problems.append(f"quantization.bits {spec.quantization.bits} is not supported by {backend}")
    if spec.training.method not in caps.methods:
        problems.append(f"training.method '{spec.training.method}' is not supported by {backend} (supported: {', '.join(caps.methods)})")
    if spec.adapter.use_dora and not caps.dora:
        problems.append(f"adapter.use_dora is not supported by {backend}")
    if spec.adapter.use_rslora and not caps.rslora:
        problems.append(f"adapter.use_rslora is not supported by {backend}")
    if spec.data.packing and not caps.packing:
        problems.append(f"data.packing is not supported by {backend}")
    world = spec.compute.world_size
    if caps.max_processes is not None and world > caps.max_processes:
        problems.append(f"compute: {world} processes requested, {backend} runs at most {caps.max_processes}; "
                        "use the swift backend for multi-GPU or multi-node training")
    if spec.compute.nnodes > 1 and not caps.multi_node:
        problems.append(f"compute.nnodes {spec.compute.nnodes}: {backend} does not support multi-node training")
    if world > 1 and spec.compute.strategy not in caps.strategies:
        problems.append(f"compute.strategy '{spec.compute.strategy}' is not supported by {backend} (supported: {', '.join(caps.strategies)})")
    return problems


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def render_program(program: Path, config: dict) -> str:
    """The program's source with CONFIG filled in and shared steps inlined: a standalone script."""
    steps = STEPS.read_text(encoding="utf-8")
    source = "\n".join(steps if line.endswith("# unifier:inline") else line
                       for line in program.read_text(encoding="utf-8").splitlines()) + "\n"
    literal = "CONFIG: dict = " + pprint.pformat(json.loads(json.dumps(config)), width=110, sort_dicts=False)
    return source.replace("CONFIG: dict = {}", literal, 1)
