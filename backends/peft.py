"""The plain backend: transformers + peft + trl, in-process, one process."""

from __future__ import annotations

from typing import Any, ClassVar

from unifier.spec import JobSpec

from . import trl_config
from .base import Capabilities, PlanContext
from .trl_backend import TrlBackend


class PeftBackend(TrlBackend):
    requires = ("torch", "transformers", "peft", "trl", "datasets")
    option_groups = ("trainer_args",)
    option_targets: ClassVar[dict[str, str]] = {"trainer_args": "trainer_args"}
    program_module = "unifier.backends.peft_program"
    script_name = "train_peft.py"
    capabilities = Capabilities(
        methods=("sft", "dpo", "orpo", "simpo", "reward", "grpo"),
        strategies=("ddp",),
        max_processes=1,
        notes=("multi-process training: use the swift backend (torchrun, DeepSpeed, FSDP2)",),
    )

    def requires_for(self, spec: JobSpec) -> tuple[str, ...]:
        return self.requires + (("bitsandbytes",) if spec.quantization.bits else ())

    def translate_model(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.model_section(ctx)

    def translate_adapter(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.lora_section(ctx)

    def translate_quantization(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.bnb_section(ctx)


BACKEND_CLASS = PeftBackend
