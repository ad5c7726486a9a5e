"""The contract every backend implements, and the pieces all of them share.

A backend is a class derived from `Backend`, named in backends/registry.py. Its surface:

- `capabilities`: what it can do at all, checked against a spec before anything heavy is imported;
- `check(spec, here)`: every reason it cannot run the spec (here=True adds what this machine lacks:
  packages, a GPU), cheap and import-free;
- `translate_<section>(ctx)` for each of SECTIONS: the pure translation of one spec section into the
  backend's native terms (keyword arguments or command-line flags), named the same in every backend;
- `assemble(ctx, fragments)`: the fragments into a closed `Plan` (backends/plan.py);
- `run(plan)`: the heavy part; it receives nothing but the plan.

`plan(ctx)` is the same for every backend: translate each section, then assemble.
"""

from __future__ import annotations

import importlib.util
import json
import pprint
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from unifier.environment import cuda_visible
from unifier.model_info import ModelInfo, read_model_info
from unifier.prequantized import PrequantizedWeights
from unifier.prequantized import problems as prequantized_problems
from unifier.prequantized import resolve as resolve_prequantized
from unifier.reporting import missing_trackers
from unifier.runfolder import RunFolder
from unifier.spec import JobSpec

from .plan import Plan
from .registry import BackendEntry

SECTIONS = ("model", "adapter", "quantization", "data", "method", "optimisation", "compute", "output")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; checked against a spec before anything heavy is imported."""

    adapters: tuple[str, ...] = ("lora", "qlora", "full")
    quant_bits: tuple[int, ...] = (4, 8)
    methods: tuple[str, ...] = ("sft", "dpo")  # names in unifier/methods.py
    data_kinds: tuple[str, ...] = ("chat", "text", "preference")
    strategies: tuple[str, ...] = ("ddp",)
    max_processes: int | None = None  # None: no limit
    multi_node: bool = False
    dora: bool = True
    rslora: bool = True
    packing: str = "yes"  # "yes", "no", or where it works ("GPU only")
    notes: tuple[str, ...] = ()

    def as_rows(self) -> dict[str, str]:
        procs = "any" if self.max_processes is None else str(self.max_processes)
        multi_node = "yes" if self.multi_node else "no"
        return {
            "adapters": ", ".join(self.adapters),
            "quantization": ", ".join(f"{b}-bit" for b in self.quant_bits) or "none",
            "methods": ", ".join(self.methods),
            "distributed": f"{', '.join(self.strategies)}; processes: {procs}; multi-node: {multi_node}",
            "dora / rslora": f"{'yes' if self.dora else 'no'} / {'yes' if self.rslora else 'no'}",
            "packing": self.packing,
        }


@dataclass(frozen=True)
class PlanContext:
    """Everything a translation may read: the spec and what unifier resolved for it (pure values)."""

    spec: JobSpec
    folder: RunFolder
    data_kind: str  # chat | text | preference
    device: str  # where the job trains: cpu | cuda
    model: ModelInfo
    target_modules: tuple[str, ...] | None  # the modules LoRA adapts; None: all-linear not resolvable yet
    resume_from: str | None = None  # a checkpoint folder to continue from
    prequantized: PrequantizedWeights | None = (
        None  # 4-bit weights loaded as stored (unifier/prequantized.py)
    )

    @property
    def weights_location(self) -> str:
        """What the backend loads: the model, or its pre-quantized twin."""
        return self.prequantized.location if self.prequantized else self.model.location

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def trainer_epochs(self) -> float:
        """data/train.jsonl holds several passes over the rows, each in its own order (unifier/data/prepare.py):
        with training.epochs the trainer reads the file epochs / passes times (max_steps: epochs is unused)."""
        from unifier.data.prepare import epochs_in_file

        t = self.spec.training
        return t.epochs if t.max_steps else t.epochs / epochs_in_file(self.spec, rows=0)

    @property
    def has_eval(self) -> bool:
        return bool(self.spec.data.eval or self.spec.data.eval_split)

    @property
    def multi_process(self) -> bool:
        return self.spec.compute.world_size > 1

    def options(self, backend: str) -> dict[str, Any]:
        return dict(self.spec.backend_options.get(backend, {}))


@dataclass
class RunResult:
    native_command: str
    backend_details: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One backend. Subclasses set the class attributes and implement the abstract methods."""

    capabilities: ClassVar[Capabilities]
    requires: ClassVar[tuple[str, ...]]  # importable module names the backend needs to run
    # backend_options.<name> keys it reads (None: any key, passed through as a native flag)
    option_groups: ClassVar[tuple[str, ...] | None] = ()

    def __init__(self, entry: BackendEntry):
        self.entry = entry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def description(self) -> str:
        return self.entry.description

    @property
    def pip_extra(self) -> str:
        return self.entry.pip_extra

    # ---- checks (cheap, no heavy imports) ----
    def check(self, spec: JobSpec, here: bool = True) -> list[str]:
        """Every reason this backend cannot run the spec (here=True: on this machine, as it is now)."""
        problems = capability_problems(spec, self.capabilities, self.name)
        problems += prequantized_problems(spec, prequantized_weights(spec))
        problems += self.backend_problems(spec, here)
        if here:
            problems += machine_problems(spec, self.requires_for(spec), self.pip_extra)
            problems += missing_trackers(spec.output.report_to)
        return problems

    def backend_problems(self, spec: JobSpec, here: bool) -> list[str]:
        """What this backend refuses beyond its capability table (override where needed)."""
        return []

    def requires_for(self, spec: JobSpec) -> tuple[str, ...]:
        return self.requires

    def option_types(self, spec: JobSpec, group: str | None) -> dict[str, tuple[str, str]] | None:
        """backend_options.<name>.<group> key -> (annotation, module) where the library's source says, so values
        are checked before any model loads (backends/signatures.value_problem); None: not known."""
        return None

    def option_names(self, spec: JobSpec, group: str | None) -> frozenset[str] | None:
        """The keyword names a backend_options group accepts in the installed library (None: unknown, not
        checked)."""
        return None

    # ---- translation (pure) ----
    def plan(self, ctx: PlanContext) -> Plan:
        fragments = {section: getattr(self, f"translate_{section}")(ctx) for section in SECTIONS}
        return self.assemble(ctx, fragments)

    @abstractmethod
    def translate_model(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_adapter(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_quantization(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_data(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_method(self, ctx: PlanContext) -> Any:
        """training.method and its options section (unifier/methods.py names each method's native trainer)."""

    @abstractmethod
    def translate_optimisation(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_compute(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def translate_output(self, ctx: PlanContext) -> Any: ...

    @abstractmethod
    def assemble(self, ctx: PlanContext, fragments: dict[str, Any]) -> Plan: ...

    # ---- data views ----
    def view_row(self, layout: str, row: dict, tokens: dict) -> dict:
        """One canonical row, with the encoder's tokens for it (unifier/data/encode.py: input_ids and
        assistant_masks, or prompt_ids / chosen_ids / rejected_ids), in a view layout this backend declared in
        its plan's data_views."""
        raise NotImplementedError(f"{self.name} declares no data view '{layout}'")

    # ---- running ----
    @abstractmethod
    def run(self, plan: Plan) -> RunResult: ...


def missing_packages(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def machine_problems(spec: JobSpec, modules: tuple[str, ...], extra: str) -> list[str]:
    """What this machine lacks for the spec: the backend's packages, and a GPU when the spec asks for one."""
    problems = []
    missing = missing_packages(modules)
    if missing:
        problems.append(f"missing packages: {', '.join(missing)} (pip install 'unifier[{extra}]')")
    if spec.compute.device == "cuda" and not cuda_visible():
        problems.append(
            "compute.device is 'cuda' but no CUDA device is visible on this machine "
            "(set compute.device: auto or cpu to train here)"
        )
    return problems


def trains_on_cpu(spec: JobSpec, here: bool) -> bool:
    """For check(): compute.device cpu always counts; 'auto' counts only when judging this machine."""
    return spec.compute.device == "cpu" or (here and spec.compute.device == "auto" and not cuda_visible())


def prequantized_weights(spec: JobSpec) -> PrequantizedWeights | None:
    return resolve_prequantized(spec, read_model_info(spec.model.name_or_path, spec.model.revision))


def deepspeed_problems(spec: JobSpec, here: bool) -> list[str]:
    """compute.strategy zero*: DeepSpeed, on GPUs (NCCL) or on CPU (gloo, several processes: ZeRO on one CPU
    process has nothing to partition); it needs the deepspeed package (pip install 'unifier[gpu]')."""
    strategy = spec.compute.strategy
    if not strategy.startswith("zero"):
        return []
    if trains_on_cpu(spec, here) and spec.compute.world_size < 2:
        return [
            f"compute.strategy '{strategy}' (DeepSpeed) on CPU needs several processes "
            "(compute.nproc_per_node 2 or more); one CPU process trains with ddp"
        ]
    if here and missing_packages(("deepspeed",)):
        return [f"compute.strategy '{strategy}' needs the deepspeed package (pip install 'unifier[gpu]')"]
    return []


def capability_problems(spec: JobSpec, caps: Capabilities, backend: str) -> list[str]:
    """Everything in the spec this backend's capability table rules out."""
    problems = []
    if spec.adapter.type not in caps.adapters:
        problems.append(
            f"adapter.type '{spec.adapter.type}' is not supported by {backend} "
            f"(supported: {', '.join(caps.adapters)})"
        )
    if spec.quantization.bits is not None and spec.quantization.bits not in caps.quant_bits:
        problems.append(f"quantization.bits {spec.quantization.bits} is not supported by {backend}")
    if spec.training.method not in caps.methods:
        problems.append(
            f"training.method '{spec.training.method}' is not supported by {backend} "
            f"(supported: {', '.join(caps.methods)})"
        )
    if spec.adapter.use_dora and not caps.dora:
        problems.append(f"adapter.use_dora is not supported by {backend}")
    if spec.adapter.use_rslora and not caps.rslora:
        problems.append(f"adapter.use_rslora is not supported by {backend}")
    if spec.data.packing and caps.packing == "no":
        problems.append(f"data.packing is not supported by {backend}")
    world = spec.compute.world_size
    if caps.max_processes is not None and world > caps.max_processes:
        problems.append(
            f"compute: {world} processes requested, {backend} runs at most {caps.max_processes}; "
            "use the swift or peft backend for multi-GPU or multi-node training"
        )
    if spec.compute.nnodes > 1 and not caps.multi_node:
        problems.append(
            f"compute.nnodes {spec.compute.nnodes}: {backend} does not support multi-node training"
        )
    strategy = spec.compute.strategy
    if strategy not in caps.strategies:
        problems.append(
            f"compute.strategy '{strategy}' is not supported by {backend} (supported: {', '.join(caps.strategies)}); "
            "DeepSpeed ZeRO and FSDP2 run on the swift and peft backends"
        )
    elif world == 1 and strategy in SHARDING_ONLY:
        problems.append(
            f"compute.strategy '{strategy}' shards over processes and changes nothing with one process "
            "(compute.nproc_per_node x nnodes = 1); set compute.strategy: ddp, train on more processes, or use "
            f"{'zero2_offload / zero3_offload' if strategy.startswith('zero') else 'zero3_offload'} to keep "
            "states in CPU memory"
        )
    return problems


# strategies that only shard across processes: with one process they would do nothing (the *_offload ones still
# move states to CPU memory)
SHARDING_ONLY = ("zero2", "zero3", "fsdp2")


def option_group_problems(spec: JobSpec, backend: Backend) -> list[str]:
    """backend_options.<name>: known groups, and (where the library is installed) keyword names its signature
    has (backends/signatures.py reads them from the source, without importing it)."""
    from .signatures import suggestion, value_problem

    groups = backend.option_groups
    options = spec.backend_options.get(backend.name, {})
    prefix = f"backend_options.{backend.name}"
    if groups is None:  # raw flags
        known = backend.option_names(spec, None)
        types = backend.option_types(spec, None) or {}
        return [
            f"{prefix}.{key}: not a {backend.name} argument{suggestion(key, known)}"
            for key in options
            if known is not None and key not in known
        ] + [
            f"{prefix}.{key}: {wrong}"
            for key, given in options.items()
            if key in types and (wrong := value_problem(given, *types[key]))
        ]
    problems = []
    for key, value in options.items():
        if key not in groups:
            problems.append(
                f"{prefix}.{key}: {backend.name} reads no such option group "
                f"(known: {', '.join(groups) or 'none'})"
            )
        elif not isinstance(value, dict):
            problems.append(f"{prefix}.{key}: expected a mapping of keyword arguments")
        else:
            known = backend.option_names(spec, key)
            problems += [
                f"{prefix}.{key}.{name}: not an argument of {backend.name}'s {key}{suggestion(name, known)}"
                for name in value
                if known is not None and name not in known
            ]
            types = backend.option_types(spec, key) or {}
            for name, given in value.items():
                if name in types:
                    wrong = value_problem(given, *types[name])
                    if wrong:
                        problems.append(f"{prefix}.{key}.{name}: {wrong}")
    return problems


def render_program(program: Path, library: Path, config: dict) -> str:
    """The program's source with CONFIG filled in and the shared library inlined: a standalone script."""
    shared = library.read_text(encoding="utf-8")
    source = (
        "\n".join(
            shared if line.endswith("# unifier:inline") else line
            for line in program.read_text(encoding="utf-8").splitlines()
        )
        + "\n"
    )
    literal = "CONFIG: dict = " + pprint.pformat(json.loads(json.dumps(config)), width=110, sort_dicts=False)
    return source.replace("CONFIG: dict = {}", literal, 1)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
