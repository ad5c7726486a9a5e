"""`unify export RUN_DIR --format merged`: the base model with the run's adapter merged in, after the fact.

The merge is the one every backend uses at training time (backends/inline_library.merge_adapter: the base in
model.dtype, for QLoRA the 16-bit base, not re-quantized). The export is written into a sibling temporary
folder and renamed into place, so the target is complete or absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import UserError
from .trained import TrainedRun

FORMATS = ("merged",)
DTYPES = ("float32", "bfloat16", "float16")


def export(
    run_dir: str | Path,
    fmt: str = "merged",
    *,
    output: str | Path | None = None,
    dtype: str | None = None,
    force: bool = False,
) -> Path:
    """Write the export; returns its folder (default RUN_DIR/export/<format>)."""
    if fmt == "gguf":
        raise UserError(
            "--format gguf is not available yet: it needs llama.cpp's converter (convert_hf_to_gguf.py)",
            hint="export --format merged, then convert the merged folder with llama.cpp",
        )
    if fmt not in FORMATS:
        raise UserError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype '{dtype}': expected one of {', '.join(DTYPES)}")
    run = TrainedRun.open(run_dir)
    target = Path(output).absolute() if output else run.folder.export(fmt)
    if target.exists():
        owned = (target / ".unifier-export").is_file()
        if not force or not owned:
            raise UserError(
                f"{target}: already exists",
                hint="pass --force to replace an export unifier wrote"
                if owned
                else "give another --output (unifier replaces only an export it wrote)",
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_merged(run, partial, dtype or run.spec.model.dtype)
        (partial / ".unifier-export").write_text(f"{fmt} export of {run.folder.root}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _write_merged(run: TrainedRun, folder: Path, dtype: str) -> None:
    from transformers import AutoTokenizer

    from .backends.inline_library import merge_adapter

    m = run.spec.model
    if run.is_adapter:
        merge_adapter(run.base, m.revision, m.trust_remote_code, dtype, str(run.weights), str(folder))
    else:  # full fine-tuning: the weights are the model; saved again in the asked dtype
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(run.weights), dtype=getattr(torch, dtype), trust_remote_code=m.trust_remote_code
        )
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(
        str(run.weights) if not run.is_adapter else run.base,
        revision=None if not run.is_adapter else m.revision,
        trust_remote_code=m.trust_remote_code,
    )
    template = run.chat_template()
    if template:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(folder))
