"""Base model for every spec section: strict, documented, with "did you mean" on unknown keys."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

# names people bring from other tools -> the spec's key (checked before the spelling suggestion)
ALIASES = {
    "lora_r": "r",
    "lora_rank": "r",
    "rank": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "lr": "learning_rate",
    "batch_size": "per_device_batch_size",
    "micro_batch_size": "per_device_batch_size",
    "per_device_train_batch_size": "per_device_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "cutoff_len": "max_seq_length",
    "sequence_len": "max_seq_length",
    "max_length": "max_seq_length",
    "model_name_or_path": "name_or_path",
    "base_model": "name_or_path",
    "lora_target": "target_modules",
    "finetuning_type": "type",
    "stage": "method",
    "output_dir": "dir",
    "warmup": "warmup_ratio",
}


class Section(BaseModel):
    """A spec section. Unknown keys are rejected with the closest known key as a suggestion; numbers are
    finite and never booleans (YAML's `true` is not 1)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=False, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            field = cls.model_fields.get(info.field_name)
            kinds = _leaf_types(field.annotation) if field else set()
            if kinds & {int, float} and bool not in kinds:
                raise ValueError(f"expected a number, not true/false (got {str(value).lower()})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        for field in cls.model_fields.values():
            if field.alias:
                known.add(field.alias)
        unknown = [k for k in data if k not in known]
        if unknown:
            key = str(unknown[0])
            alias = ALIASES.get(key)
            close = (
                [alias] if alias in known else difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
            )
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ValueError(f"unknown key '{key}'{hint}")
        return data


def _leaf_types(annotation) -> set:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_leaf_types(arg) for arg in get_args(annotation)))
    return {annotation}
