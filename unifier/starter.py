"""`unify init`: a starter recipe with every value that matters written out, shaped by a few options."""

from __future__ import annotations

from . import methods as method_table
from .builtin import ASSETS, TINY_MODEL_REF
from .errors import UserError

FORMATS = ("messages", "sharegpt", "alpaca", "text", "preference")


def starter_recipe(
    *,
    model: str | None = None,
    data: str | None = None,
    data_format: str | None = None,
    method: str = "sft",
    qlora: bool = False,
) -> str:
    """The starter recipe's text (comments kept): LoRA SFT on the tiny model and data unless told otherwise."""
    if method not in method_table.METHODS:
        raise UserError(f"--method '{method}': expected one of {', '.join(method_table.METHODS)}")
    entry = method_table.method(method)
    if method == "grpo":
        raise UserError(
            "--method grpo: a GRPO recipe needs prompts and reward functions, more than a starter fills in",
            hint="copy recipes/tiny-cpu-grpo.yaml (the tiny model, bundled prompts, a built-in and an own reward)",
        )
    if data_format is not None and data_format not in FORMATS:
        raise UserError(f"--format '{data_format}': expected one of {', '.join(FORMATS)}")
    if entry.pairwise and data_format not in (None, "preference"):
        raise UserError(
            f"--method {method} trains on preference pairs", hint="pass --format preference (or no --format)"
        )
    if method == "kto" and data_format not in (None, "unpaired"):
        raise UserError(
            "--method kto trains on unpaired answers with a label",
            hint="pass --format unpaired (or no --format)",
        )
    text = (ASSETS / "starter_recipe.yaml").read_text(encoding="utf-8")
    tiny = model is None or model == TINY_MODEL_REF
    if not tiny:
        text = _replace(text, "  name_or_path: builtin:tiny-qwen2", f"  name_or_path: {model}")
        text = _replace(
            text,
            "  dtype: float32            # CPU trains in fp32; on GPU use bfloat16",
            "  dtype: bfloat16           # GPU precision; float32 to train on CPU",
        )
        text = _replace(text, "  max_seq_length: 256", "  max_seq_length: 2048")
        text = _replace(text, "  learning_rate: 3.0e-3", "  learning_rate: 2.0e-4")
        text = _replace(text, "  max_steps: 30", "  max_steps: 500         # or remove it and set epochs")
    if method != "sft":
        text = _replace(text, "  method: sft", f"  method: {method}\n{method_options(method)}")
    if entry.pairwise:
        data = data or "builtin:tiny-preference"
        data_format = "preference"
        if tiny:
            text = _replace(text, "  learning_rate: 3.0e-3", "  learning_rate: 5.0e-3")
    if method == "kto":
        data = data or "builtin:tiny-kto"
        data_format = "unpaired"
        if tiny:
            text = _replace(text, "  learning_rate: 3.0e-3", "  learning_rate: 5.0e-3")
    if data is not None:
        text = _replace(text, "    - path: builtin:tiny-chat", f"    - path: {data}")
    if data_format is not None:
        text = _replace(text, "      format: messages", f"      format: {data_format}")
    if data_format == "text":
        text = _replace(text, "  assistant_only_loss: true", "  assistant_only_loss: false")
    if qlora:
        text = _replace(text, "  type: lora", "  type: qlora")
        compute = "float32" if tiny else "bfloat16"
        text = _replace(
            text,
            "\ndata:\n",
            "\nquantization:             # bitsandbytes NF4 base weights\n  bits: 4\n  quant_type: nf4\n"
            f"  double_quant: true\n  compute_dtype: {compute}\n\ndata:\n",
        )
    if not tiny:
        text = _replace(text, "  device: cpu", "  device: auto             # CUDA when available, else CPU")
    return text


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:  # the asset and this module drifted apart: a bug, not a user mistake
        raise AssertionError(f"starter recipe lacks {old!r}")
    return text.replace(old, new, 1)


def method_options(method: str) -> str:
    """The method's options section with every default written out (unifier/spec/training.py)."""
    from .spec.training import VARIANTS

    options = VARIANTS[method].model_fields[method].default_factory()
    lines = [f"  {method}:"] + [f"    {key}: {value}" for key, value in options.model_dump().items()]
    return "\n".join(lines)
