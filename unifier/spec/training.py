"""`training:` the optimisation: method, schedule, batch and checkpointing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class DPOSpec(Section):
    beta: float = Field(0.1, gt=0, description="DPO temperature.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="DPO loss variant.")


class TrainingSpec(Section):
    method: Literal["sft", "dpo"] = Field(
        "sft", description="sft: supervised fine-tuning; dpo: preference optimisation."
    )
    epochs: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="Passes over the training data (ignored when max_steps is set). Every pass reads the rows in "
        "a new order (seeded by data.seed and the pass), the same on every backend.",
    )
    max_steps: int | None = Field(None, gt=0, le=10**9, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule."
    )
    min_lr_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="cosine only: the learning rate decays to this fraction of learning_rate instead of 0 "
        "(transformers' cosine_with_min_lr, min_lr_rate; LLaMA-Factory's and axolotl's cosine_min_lr_ratio).",
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps for linear warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps (overrides warmup_ratio when > 0).")
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW weight decay (ms-swift's own default is 0.1; unifier passes this one)."
    )
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd"] = Field(
        "adamw_torch", description="Optimizer (the 8-bit and paged ones are bitsandbytes')."
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    adam_beta2: float = Field(
        0.999, ge=0, lt=1, description="Adam beta2 (ms-swift's own default is 0.95; unifier passes this one)."
    )
    adam_epsilon: float = Field(1e-8, gt=0, description="Adam epsilon.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    per_device_batch_size: int = Field(1, gt=0, description="Samples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Forward passes per optimizer step.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    seed: int = Field(42, ge=0, lt=2**32, description="Seed set before the model and adapter are built.")
    logging_steps: int = Field(1, gt=0, description="Log metrics every N optimizer steps.")
    save_steps: int | None = Field(
        200,
        gt=0,
        description="Save a resumable checkpoint (checkpoints/checkpoint-<step>: weights, optimizer, scheduler, "
        "RNG and data position) every N optimizer steps, so runs longer than N steps survive a crash; the "
        "last step is always saved too. null: only the last step.",
    )
    save_total_limit: int | None = Field(
        2,
        gt=0,
        description="Keep at most this many checkpoints (the newest ones; older ones are deleted as new ones are "
        "complete). null keeps every checkpoint.",
    )
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps (needs eval data).")
    dpo: DPOSpec = Field(default_factory=DPOSpec, description="DPO settings (used when method is dpo).")

    @model_validator(mode="after")
    def _min_lr_ratio_needs_cosine(self):
        if self.min_lr_ratio and self.lr_scheduler != "cosine":
            raise ValueError(
                f"min_lr_ratio {self.min_lr_ratio} applies to lr_scheduler cosine only (got {self.lr_scheduler!r}); "
                "set training.lr_scheduler: cosine or drop min_lr_ratio"
            )
        return self

    @property
    def scheduler(self) -> tuple[str, dict | None]:
        """The transformers scheduler name and its lr_scheduler_kwargs (both trainers take the same pair)."""
        if self.lr_scheduler == "cosine" and self.min_lr_ratio:
            return "cosine_with_min_lr", {"min_lr_rate": self.min_lr_ratio}
        return self.lr_scheduler, None
