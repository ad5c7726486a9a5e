"""The whole job spec: what a recipe file contains."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from ..backends import registry
from .adapter import AdapterSpec
from .base import Section
from .compute import ComputeSpec
from .data import DataSpec
from .evaluation import EvalSpec
from .model import ModelSpec
from .output import OutputSpec
from .quantization import QuantizationSpec
from .training import SFTTraining, TrainingSpec


def _backend_enum(schema: dict) -> None:
    schema["enum"] = ["auto", *registry.active().names()]


class JobSpec(Section):
    """One fine-tuning job, independent of the backend that runs it."""

    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name (used in output.dir)."
    )
    model: ModelSpec = Field(description="Base model.")
    adapter: AdapterSpec = Field(default_factory=AdapterSpec, description="What is trained.")
    quantization: QuantizationSpec = Field(
        default_factory=QuantizationSpec, description="Storage of frozen weights."
    )
    data: DataSpec = Field(description="Training and evaluation data.")
    training: TrainingSpec = Field(default_factory=SFTTraining, description="Optimisation settings.")
    compute: ComputeSpec = Field(default_factory=ComputeSpec, description="Devices and processes.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Run folder.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation when training ends.")
    backend: str = Field(
        "auto",
        json_schema_extra=_backend_enum,
        description="Backend that runs the job; 'auto' picks the first available that supports it.",
    )
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Escape hatch: per-backend raw native arguments, passed through verbatim and recorded: "
        "swift takes its --flags by name, peft and unsloth take groups (trainer_args: SFTConfig/DPOConfig "
        "fields, from_pretrained, lora / get_peft_model). Experiment trackers: output.report_to.",
        examples=[
            {
                "swift": {"logging_first_step": True},
                "peft": {"trainer_args": {"logging_first_step": True}},
                "unsloth": {"trainer_args": {"logging_first_step": True}},
            }
        ],
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        names = registry.active().names()
        if value != "auto" and value not in names:
            raise ValueError(f"unknown backend '{value}'; expected auto or one of {', '.join(names)}")
        return value

    @field_validator("backend_options")
    @classmethod
    def _known_backends(cls, value: dict) -> dict:
        names = registry.active().names()
        for key in value:
            if key not in names:
                raise ValueError(f"unknown backend '{key}'; expected one of {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _cross_section_rules(self):
        self.adapter.check_with(self.quantization)
        if self.training.eval_steps and not (self.data.eval or self.data.eval_split):
            raise ValueError("training.eval_steps needs evaluation data: set data.eval or data.eval_split")
        if self.eval.after_training and not (self.data.eval or self.data.eval_split or self.eval.retain):
            raise ValueError(
                "eval.after_training needs something to score: set data.eval or data.eval_split (held-out rows), "
                "or eval.retain"
            )
        if self.training.method == "grpo":
            self._grpo_rules()
        if self.data.packing and self.training.method != "sft":
            raise ValueError(
                f"data.packing: {self.training.method} trains on whole pairs or prompts, which no backend packs; "
                "set data.packing: false"
            )
        method = self.training.method
        if self.eval.after_training and method == "reward" and self.eval.retain:
            raise ValueError(
                "eval.retain: a reward model writes no text, so there is nothing to check for forgetting; "
                "eval.after_training ranks its held-out pairs (data.eval or data.eval_split): remove eval.retain"
            )
        if self.training.method == "reward" and self.output.save != "adapter":
            raise ValueError(
                f"output.save {self.output.save}: a reward model is saved as trained (its adapter with the score "
                "head, or full weights); merging it into a chat model means nothing: set output.save: adapter"
            )
        return self

    def _grpo_rules(self) -> None:
        t, g = self.training, self.training.grpo
        completions = t.per_device_batch_size * self.compute.world_size * t.gradient_accumulation_steps
        if completions % g.num_generations:
            raise ValueError(
                f"training: GRPO scores each prompt's {g.num_generations} completions as one group, but an optimizer "
                f"step holds {completions} completions (per_device_batch_size {t.per_device_batch_size} x "
                f"{self.compute.world_size} processes x gradient_accumulation_steps {t.gradient_accumulation_steps}); "
                "make that a multiple of grpo.num_generations"
            )
        if g.max_completion_length >= self.model.max_seq_length:
            raise ValueError(
                f"training.grpo.max_completion_length {g.max_completion_length} leaves no room for the prompt within "
                f"model.max_seq_length {self.model.max_seq_length}"
            )
        if self.data.packing:
            raise ValueError(
                "data.packing: GRPO generates its completions, there is nothing to pack; set it false"
            )
