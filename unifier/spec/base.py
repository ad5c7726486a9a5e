"""Base model for every spec section: strict, documented, with "did you mean" on unknown keys."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    """A spec section. Unknown keys are rejected with the closest known key as a suggestion."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=False)

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
            key = unknown[0]
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ValueError(f"unknown key '{key}'{hint}")
        return data
