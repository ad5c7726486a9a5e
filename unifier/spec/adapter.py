"""`adapter:` what is trained: LoRA, QLoRA or all weights."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section


class AdapterSpec(Section):
    type: Literal["lora", "qlora", "full"] = Field(
        "lora",
        description="lora: low-rank adapter on frozen weights; qlora: lora on quantized frozen weights "
        "(needs quantization.bits: 4, or 8 for 8-bit); full: every weight is trained.",
    )
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(
        32, gt=0, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer except the output head.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved beside the adapter.",
        examples=[["embed_tokens", "lm_head"]],
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return value

    def check_with(self, quantization) -> None:
        """Rules that tie the adapter to quantization."""
        if self.type == "qlora" and quantization.bits not in (4, 8):
            raise ValueError(
                "adapter.type 'qlora' needs quantization.bits: 4 (or 8 for an 8-bit base); set it, "
                "or use adapter.type 'lora'"
            )
        if self.type == "full" and quantization.bits is not None:
            raise ValueError(
                "adapter.type 'full' cannot train quantized weights: remove quantization.bits or use 'qlora'"
            )
        if self.type == "lora" and quantization.bits is not None:
            raise ValueError(
                f"quantization.bits {quantization.bits} with adapter.type 'lora': use adapter.type 'qlora' for a "
                "quantized base, or remove quantization.bits"
            )
        if self.use_dora and self.type == "full":
            raise ValueError("adapter.use_dora needs adapter.type lora or qlora")
