"""Pre-quantized 4-bit weights (bitsandbytes-serialized checkpoints): the same weights on every backend.

A checkpoint is pre-quantized when its config.json carries a bitsandbytes 4-bit `quantization_config`, as
unsloth's dynamic 4-bit models (`...-unsloth-bnb-4bit`) do: most linear layers stored NF4, some sensitive ones
kept in 16-bit (`llm_int8_skip_modules`). Such a checkpoint is loaded as stored by unsloth, ms-swift and peft
(no second quantization: the plans drop their load-time bitsandbytes settings). With `quantization.bits: 4`
and `quantization.prequantized: true`, a hub name maps to unsloth's twin, read from unsloth's mapper.py
without importing unsloth, so every backend trains the twin. Pure: no torch, no network.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from unifier.errors import UserError
from unifier.model_info import ModelInfo, read_model_info

TWIN_SUFFIX = "-unsloth-bnb-4bit"


@dataclass(frozen=True)
class PrequantizedWeights:
    location: str  # what every backend loads: a local folder or a hub name
    source: str  # how unifier found it, for the plan
    original: str | None  # the hub name the recipe wrote, when the twin replaces it
    quant_type: str | None  # from the checkpoint's quantization_config; None: not readable before the run
    double_quant: bool | None
    compute_dtype: str | None
    skip_modules: tuple[str, ...] | None  # kept in 16-bit
    quant_storage: str | None

    def describe(self) -> str:
        kept = (
            "kept in 16-bit: " + ", ".join(self.skip_modules)
            if self.skip_modules
            else "kept in 16-bit: none"
            if self.skip_modules is not None
            else "16-bit modules: read from its config.json when it loads"
        )
        layout = (
            f"{self.quant_type}, double quant {str(self.double_quant).lower()}" if self.quant_type else ""
        )
        return f"pre-quantized 4-bit weights: {self.location} ({self.source}{'; ' + layout if layout else ''}; {kept})"


def bnb_4bit_config(config: dict | None) -> dict | None:
    """The checkpoint's bitsandbytes 4-bit quantization_config, or None (not quantized, or another method)."""
    quant = (config or {}).get("quantization_config") or {}
    if quant.get("quant_method") != "bitsandbytes":
        return None
    if not (quant.get("load_in_4bit") or quant.get("_load_in_4bit")):
        return None
    return quant


def from_checkpoint(info: ModelInfo, source: str, original: str | None) -> PrequantizedWeights:
    quant = bnb_4bit_config(info.config) or {}
    skip = quant.get("llm_int8_skip_modules")
    return PrequantizedWeights(
        location=info.location,
        source=source,
        original=original,
        quant_type=quant.get("bnb_4bit_quant_type"),
        double_quant=quant.get("bnb_4bit_use_double_quant") if quant else None,
        compute_dtype=quant.get("bnb_4bit_compute_dtype"),
        skip_modules=tuple(skip) if isinstance(skip, list) else (() if quant else None),
        quant_storage=quant.get("bnb_4bit_quant_storage"),
    )


def resolve(spec, info: ModelInfo) -> PrequantizedWeights | None:
    """The pre-quantized weights this spec trains, or None (a 16-bit base, quantized at load time or not)."""
    if bnb_4bit_config(info.config):
        return from_checkpoint(info, "a bitsandbytes 4-bit checkpoint", None)
    q = spec.quantization
    if q.bits != 4 or not q.prequantized or info.is_local:
        return None
    twin = unsloth_twin(info.location)
    if twin is None:
        return None
    twin_info = read_model_info(twin, None)  # the hub cache may hold its config.json
    return from_checkpoint(twin_info, f"unsloth's dynamic 4-bit twin of {info.location}", info.location)


def unsloth_twin(name: str) -> str | None:
    """unsloth's pre-quantized '-unsloth-bnb-4bit' twin of a hub name, from unsloth's mapper.py (a file with no
    imports, read without importing unsloth); None when there is none or unsloth is not installed."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        return None
    mapper = Path(next(iter(spec.submodule_search_locations))) / "models" / "mapper.py"
    namespace: dict = {}
    try:
        exec(compile(mapper.read_text(encoding="utf-8"), str(mapper), "exec"), namespace)
    except Exception as exc:  # a changed mapper must not break planning
        raise UserError(
            f"could not read unsloth's model mapper {mapper}: {exc}",
            hint="set quantization.prequantized: false to load the name as written",
        ) from None
    table = namespace.get("FLOAT_TO_INT_MAPPER", {})
    twin = table.get(name) or table.get(name.lower())
    return twin if twin and twin.endswith(TWIN_SUFFIX) else None


def problems(spec, weights: PrequantizedWeights | None) -> list[str]:
    """What a spec asks that pre-quantized weights cannot give: a setting that contradicts the stored
    quantization (unifier does not quantize twice), or sharding the 4-bit weights."""
    if weights is None:
        return []
    q, found = spec.quantization, []
    where = weights.location
    if q.bits != 4 or spec.adapter.type != "qlora":
        found.append(
            f"model {where} is stored in 4-bit (bitsandbytes): set quantization.bits: 4 and adapter.type: qlora"
        )
    if weights.original and spec.model.revision:
        found.append(
            f"model.revision names a revision of {weights.original}, not of its twin {where}: remove "
            "model.revision, or set quantization.prequantized: false to load the revision as written"
        )
    explicit = q.model_fields_set
    stored = {"quant_type": weights.quant_type, "double_quant": weights.double_quant}
    stored["compute_dtype"] = weights.compute_dtype
    for field, value in stored.items():
        if (
            field in explicit
            and value is not None
            and getattr(q, field) is not None
            and getattr(q, field) != value
        ):
            found.append(
                f"quantization.{field} is {getattr(q, field)!r} but {where} is stored with {value!r}: "
                f"remove quantization.{field} (the checkpoint's own setting is used) or set it to {value!r}"
            )
    strategy = spec.compute.strategy
    if spec.compute.world_size > 1 and strategy in ("zero3", "zero3_offload", "fsdp2"):
        found.append(
            f"compute.strategy '{strategy}' shards the weights, and {where}'s 4-bit weights are stored as "
            f"{weights.quant_storage or 'uint8'}, which ZeRO-3 and FSDP2 cannot shard with the 16-bit ones: "
            "use ddp or zero2 (each process holds its own 4-bit copy)"
        )
    return found
