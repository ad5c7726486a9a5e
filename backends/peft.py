"""The plain backend: transformers + peft + trl: in unifier's process, or under torchrun with several."""

from __future__ import annotations

from typing import Any, ClassVar

from unifier.spec import JobSpec

from . import trl_config
from .base import Capabilities, PlanContext, deepspeed_problems
from .trl_backend import TrlBackend


class PeftBackend(TrlBackend):
    requires = ("torch", "transformers", "peft", "trl", "datasets")
    option_groups = ("trainer_args",)
    option_targets: ClassVar[dict[str, str]] = {"trainer_args": "trainer_args"}
    program_module = "unifier.backends.peft_program"
    script_name = "train_peft.py"
    capabilities = Capabilities(
        methods=("sft", "dpo", "kto", "orpo", "simpo", "reward", "grpo"),
        strategies=("ddp", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2"),
        multi_node=True,
        notes=(
            "several processes: torchrun starts the same program on every rank (the transformers Trainer's "
            "DDP, FSDP2 with ms-swift's preset, DeepSpeed ZeRO through its integration), checked for identical "
            "rank weights",
            "DeepSpeed ZeRO-2/3 needs GPUs and the deepspeed package",
        ),
    )

    def backend_problems(self, spec: JobSpec, here: bool) -> list[str]:
        return deepspeed_problems(spec, here)

    def requires_for(self, spec: JobSpec) -> tuple[str, ...]:
        return self.requires + (("bitsandbytes",) if spec.quantization.bits else ())

    def translate_model(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.model_section(ctx)

    def translate_adapter(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.lora_section(ctx)

    def translate_quantization(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.bnb_section(ctx)


BACKEND_CLASS = PeftBackend
