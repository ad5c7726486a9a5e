"""`training:` the optimisation: method, schedule, batch and checkpointing.

`training` is one section per method (discriminated on `method`, default sft): the settings every method
shares, plus the method's own options section (`dpo:`, `kto:`, `orpo:`, `simpo:`, ...). Which methods exist, their data
and their trainers: unifier/methods.py. Every option below is passed explicitly to every backend, including
where the backends' own defaults disagree (each description names the default it overrides)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .. import methods as method_table
from .base import Section


class DPOSpec(Section):
    beta: float = Field(0.1, gt=0, description="DPO temperature.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="DPO loss variant.")


class KTOSpec(Section):
    beta: float = Field(0.1, gt=0, description="KTO temperature (trl's and ms-swift's default 0.1).")
    desirable_weight: float = Field(
        1.0,
        gt=0,
        description="Loss weight of the desirable answers (label true); with more desirable than undesirable rows "
        "the paper keeps desirable_weight x desirable rows / (undesirable_weight x undesirable rows) in [1, 4/3].",
    )
    undesirable_weight: float = Field(
        1.0, gt=0, description="Loss weight of the undesirable answers (label false)."
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto",
        description="kto: the paper's loss, with the KL estimate from mismatched prompt/answer pairs; "
        "apo_zero_unpaired: APO-zero's unpaired variant (no KL term).",
    )


class ORPOSpec(Section):
    beta: float = Field(
        0.1,
        gt=0,
        description="Weight of the odds-ratio term beside the chosen answer's NLL (the paper's lambda; trl's and "
        "ms-swift's beta, both 0.1). The NLL covers the answer tokens only, as in the paper and ms-swift (trl's "
        "own ORPO also counts the prompt tokens).",
    )


class SimPOSpec(Section):
    beta: float = Field(
        2.0,
        gt=0,
        description="Reward scale of the length-normalised log-probabilities (the paper's beta, 2.0-2.5; "
        "ms-swift's default 2.0, trl's CPO default 0.1).",
    )
    gamma: float = Field(
        1.0,
        ge=0,
        description="Target reward margin (the paper's gamma; trl's simpo_gamma default 0.5, ms-swift's 1.0).",
    )
    nll_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of an NLL term on the chosen answer (trl's and ms-swift's cpo_alpha, both 1.0 by "
        "default, which makes it CPO-SimPO); 0 is the paper's SimPO.",
    )


BUILTIN_REWARDS = {
    "exact_answer": "1 when the completion's final answer (an <answer>...</answer> block, else \\boxed{...}, else its "
    "last number, else its last line) equals the row's `answer` column (case and surrounding space ignored), else 0",
    "format": "1 when the completion is <think>...</think> followed by an answer, or holds an <answer>...</answer> "
    "block, else 0",
    "length": "1 - completion tokens / max_completion_length (shorter answers score higher)",
}
REWARD_REFERENCE = re.compile(r"^(?P<file>.+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")  # the last colon splits


def reward_name(reference: str) -> str:
    """What a reward is called in metrics.jsonl (rewards/<name>/mean) and by ms-swift: the built-in's name or
    the function's."""
    match = REWARD_REFERENCE.match(reference)
    return reference if reference in BUILTIN_REWARDS or match is None else match["function"]


class GRPOSpec(Section):
    rewards: list[str] = Field(
        min_length=1,
        description="Reward functions, summed with reward_weights: built-in "
        + "; ".join(f"{name} ({meaning})" for name, meaning in BUILTIN_REWARDS.items())
        + "; or your own `file.py:function` (a path relative to the recipe; `module:function` means module.py "
        "beside the recipe), called as function(prompts=[messages...], completions=[text...], **columns) with "
        "the rows' other columns as lists, returning one float (or None) per completion. The same arguments on "
        "every backend; loaded only when named.",
        examples=[["exact_answer", "format"], ["rewards.py:correct"]],
    )
    reward_weights: list[float] | None = Field(
        None,
        description="One weight per reward (default: 1 each; trl and ms-swift both sum weighted rewards).",
    )
    num_generations: int = Field(
        4,
        ge=2,
        le=1024,
        description="Completions per prompt, scored as a group (trl's and ms-swift's default 8).",
    )
    max_completion_length: int = Field(
        128, gt=0, description="Longest completion in tokens (trl's default 256, ms-swift's 512)."
    )
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (trl 1.0, ms-swift 0.9).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1.0: off, both backends' default).")
    beta: float = Field(
        0.0,
        ge=0,
        description="KL penalty against the reference (trl's default 0.0, ms-swift's 0.04); above 0 a reference "
        "forward runs every step (LoRA: the base, adapter off).",
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo",
        description="How token losses are normalised: dapo (trl's default: by the active tokens of the global "
        "batch), grpo (ms-swift's default: per sequence, then averaged), dr_grpo, bnpo.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Advantages divided by the reward std of the group (both defaults), the batch, or not.",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="PPO clipping range (both backends' default 0.2).")

    @field_validator("reward_weights", mode="before")
    @classmethod
    def _numbers_not_booleans(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(weight, bool) for weight in value):
            raise ValueError("expected numbers, not true/false")
        return value

    @model_validator(mode="after")
    def _known_rewards(self):
        for index, name in enumerate(self.rewards):
            if name not in BUILTIN_REWARDS and not REWARD_REFERENCE.match(name):
                raise ValueError(
                    f"rewards[{index}] {name!r}: expected a built-in reward ({', '.join(BUILTIN_REWARDS)}) or "
                    "file.py:function"
                )
        names = [reward_name(reference) for reference in self.rewards]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"rewards: two rewards are named {twice[0]!r} (metrics and ms-swift know a reward by its name): "
                "rename one function, or give one reward a weight in reward_weights instead of naming it twice"
            )
        if self.reward_weights is not None and not any(self.reward_weights):
            raise ValueError(
                "reward_weights: every weight is 0, so no reward reaches the loss; give one a weight"
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} values for {len(self.rewards)} rewards: give one "
                "weight per reward"
            )
        return self


class RewardSpec(Section):
    center_coefficient: float = Field(
        0.0,
        ge=0,
        description="Weight of a penalty on the mean squared score, keeping scores centred on 0 (trl's and "
        "ms-swift's center_rewards_coefficient, off by default in both; 0: off).",
    )


class TrainingSpecBase(Section):
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

    @model_validator(mode="before")
    @classmethod
    def _options_of_another_method(cls, data: Any) -> Any:
        """`dpo:` under `method: sft` (or no method) names the method it belongs to, not a spelling."""
        if isinstance(data, dict):
            chosen = data.get("method", "sft")
            # `--set training.dpo=null` drops another method's section (switching a recipe's method), or resets
            # the method's own to its defaults
            data = {
                k: v for k, v in data.items() if not (k in method_table.METHODS and v is None)
            }  # null: defaults
            for key in data:
                if key in method_table.METHODS and key != chosen and key not in cls.model_fields:
                    raise ValueError(
                        f"'{key}' holds the options of method {key}, but training.method is {chosen!r}; "
                        f"set training.method: {key}, or drop the {key} section (--set training.{key}=null)"
                    )
        return data

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


class SFTTraining(TrainingSpecBase):
    method: Literal["sft"] = Field("sft", description=method_table.method("sft").summary)


class DPOTraining(TrainingSpecBase):
    method: Literal["dpo"] = Field(description=method_table.method("dpo").summary)
    dpo: DPOSpec = Field(default_factory=DPOSpec, description="DPO settings.")


class KTOTraining(TrainingSpecBase):
    method: Literal["kto"] = Field(description=method_table.method("kto").summary)
    kto: KTOSpec = Field(default_factory=KTOSpec, description="KTO settings.")

    @model_validator(mode="after")
    def _kl_needs_a_batch(self):
        if self.kto.loss_type == "kto" and self.per_device_batch_size < 2:
            raise ValueError(
                "training.per_device_batch_size must be at least 2 for KTO: its KL estimate pairs each prompt with "
                "the answer of another row in the same forward pass (trl refuses 1); raise it (lower "
                "gradient_accumulation_steps to keep the global batch), or use kto.loss_type apo_zero_unpaired"
            )
        return self


class ORPOTraining(TrainingSpecBase):
    method: Literal["orpo"] = Field(description=method_table.method("orpo").summary)
    orpo: ORPOSpec = Field(default_factory=ORPOSpec, description="ORPO settings.")


class SimPOTraining(TrainingSpecBase):
    method: Literal["simpo"] = Field(description=method_table.method("simpo").summary)
    simpo: SimPOSpec = Field(default_factory=SimPOSpec, description="SimPO settings.")


class RewardTraining(TrainingSpecBase):
    method: Literal["reward"] = Field(description=method_table.method("reward").summary)
    reward: RewardSpec = Field(default_factory=RewardSpec, description="Reward-model settings.")


class GRPOTraining(TrainingSpecBase):
    method: Literal["grpo"] = Field(description=method_table.method("grpo").summary)
    grpo: GRPOSpec = Field(description="GRPO settings (rewards are required).")


VARIANTS: dict[str, type[TrainingSpecBase]] = {
    "sft": SFTTraining,
    "dpo": DPOTraining,
    "kto": KTOTraining,
    "orpo": ORPOTraining,
    "simpo": SimPOTraining,
    "reward": RewardTraining,
    "grpo": GRPOTraining,
}
assert set(VARIANTS) == set(method_table.METHODS), "every method in unifier/methods.py has a training section"


def _method_of(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("method", "sft")
    return getattr(value, "method", "sft")


TrainingSpec = Annotated[
    Union[tuple(Annotated[variant, Tag(name)] for name, variant in VARIANTS.items())],  # noqa: UP007
    Discriminator(
        _method_of,
        custom_error_type="unknown_method",
        custom_error_message=f"unknown method: training.method must be one of {', '.join(VARIANTS)}",
    ),
]
