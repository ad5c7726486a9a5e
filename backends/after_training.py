"""The steps a plan lists for after training (backends/plan.py), run in unifier's process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from unifier.ownership import newest_checkpoint
from unifier.runfolder import RunFolder

from .plan import AfterStep, CheckRanks, CollectCheckpoint, MergeAdapter

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
# what a checkpoint holds for resuming only (and the pickled training arguments): never in adapter/ or model/
NOT_COLLECTED = (
    "*.pt",
    "*.pth",
    "rng_state*",
    "global_step*",
    "training_args.bin",
    "trainer_state.json",
    "zero_to_fp32.py",
    "latest",
    "unifier_complete.json",
)


def run_step(step: AfterStep) -> dict[str, Any]:
    if isinstance(step, CollectCheckpoint):
        return collect_checkpoint(step)
    if isinstance(step, MergeAdapter):
        return merge(step)
    if isinstance(step, CheckRanks):
        return {"rank_check": verify_ranks(step)}
    raise TypeError(f"unknown step {step!r}")


def collect_checkpoint(step: CollectCheckpoint) -> dict[str, Any]:
    """The final checkpoint becomes adapter/ (or model/), with the tokenizer ms-swift does not save."""
    found = newest_checkpoint(RunFolder(step.run_dir))
    if found is None:
        raise RuntimeError(
            f"the trainer wrote no complete checkpoint under {RunFolder(step.run_dir).checkpoints}"
        )
    checkpoint = found.path
    target = Path(step.target)
    shutil.copytree(checkpoint, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_COLLECTED))
    if step.tokenizer_from and Path(step.tokenizer_from).is_dir():
        for name in TOKENIZER_FILES:
            source = Path(step.tokenizer_from) / name
            if source.is_file() and not (target / name).exists():
                shutil.copy2(source, target / name)
    if step.chat_template:
        shutil.copy2(step.chat_template, target / "chat_template.jinja")
    return {"checkpoint": str(checkpoint)}


def merge(step: MergeAdapter) -> dict[str, Any]:
    """output.save merged/both: the same merge as the peft and unsloth backends (into the base in model.dtype;
    `swift export --merge_lora` would re-quantize a QLoRA merge, which the other backends do not)."""
    from .inline_library import merge_adapter

    merge_adapter(
        step.base, step.revision, step.trust_remote_code, step.dtype, step.adapter_dir, step.merged_dir
    )
    for name in TOKENIZER_FILES:
        source = Path(step.adapter_dir) / name
        if source.is_file():
            shutil.copy2(source, Path(step.merged_dir) / name)
    return {"merged": step.merged_dir}


def verify_ranks(step: CheckRanks) -> dict[str, Any]:
    """Prove the ranks trained one model together: every rank reports the same trainable-weight digest."""
    records = [json.loads(p.read_text()) for p in sorted(Path(step.ranks_dir).glob("rank*.json"))]
    problems = []
    if step.expected_ranks and len(records) != step.expected_ranks:
        problems.append(f"{len(records)} of {step.expected_ranks} ranks reported")
    if any(not r["distributed_initialized"] or r["world_size"] != step.world_size for r in records):
        problems.append("a rank trained without torch.distributed at the full world size")
    if len({r["trainable_digest"] for r in records}) > 1:
        problems.append(
            "the ranks ended with different weights (independent copies, not data-parallel training)"
        )
    if problems:
        raise RuntimeError("multi-process run was not data-parallel: " + "; ".join(problems))
    return {
        "ranks": len(records),
        "world_size": step.world_size,
        "identical_weights": True,
        "process_group_backend": records[0]["backend"] if records else None,
    }
