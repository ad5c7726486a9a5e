"""`quantization:` how the frozen base weights are stored while training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section
from .model import Dtype


class QuantizationSpec(Section):
    bits: Literal[4, 8] | None = Field(
        None, description="4 or 8 for bitsandbytes quantization; null for none."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(
        False, description="Quantize the quantization constants too (saves ~0.4 bit per weight)."
    )
    compute_dtype: Dtype | None = Field(None, description="Dtype of 4-bit matmuls; null means model.dtype.")
    prequantized: bool = Field(
        True,
        description="With bits 4 and a hub name, every backend loads unsloth's pre-quantized dynamic 4-bit "
        "twin (…-unsloth-bnb-4bit, found in unsloth's mapping table) as stored. false loads the name as "
        "written and quantizes it at load time. A local 4-bit checkpoint always loads as stored.",
    )
