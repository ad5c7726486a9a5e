"""Parity probe: what a trainer really trains on, recorded at train start (output.probe: true).

Used by all three backends (for ms-swift through its external-plugin callback), so the records are
comparable: the first tokenized samples exactly as the data collator returns them (input_ids and
labels, and position_ids where the collator makes them, as it does for packed rows), the trainable
parameter names and sizes, and the initial trainable weights.
"""

from __future__ import annotations

import json
import os

SAMPLES = 256  # enough to cover every row of the tiny datasets (multi-turn, system, tools)


def record_train_start(folder: str, model, train_dataloader) -> None:
    import torch
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    sizes = {_canonical(name): int(param.numel()) for name, param in trainable.items()}
    summary = {
        "count": sum(sizes.values()),
        "parameters": sizes,
        "quantized_modules": quantized_modules(model),
    }
    with open(os.path.join(folder, "trainable.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    if sum(sizes.values()) < 50_000_000:  # adapters; a full model's initial weights are its checkpoint
        tensors = {
            _canonical(n): p.detach().to(torch.float32).cpu().contiguous() for n, p in trainable.items()
        }
        save_file(tensors, os.path.join(folder, "initial_trainable.safetensors"))
    dataset, collate = train_dataloader.dataset, train_dataloader.collate_fn
    with open(os.path.join(folder, "samples.jsonl"), "w") as handle:
        for index in range(min(SAMPLES, len(dataset))):
            handle.write(json.dumps(_token_fields(collate([dataset[index]]))) + "\n")


def quantized_modules(model) -> list[str]:
    """The modules whose frozen weight is bitsandbytes 4-bit (peft's LoRA wrapper and its base_layer count once):
    what a pre-quantized checkpoint kept in 16-bit is absent."""
    names = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if type(weight).__name__ == "Params4bit":
            names.add(_canonical(name).replace(".base_layer", ""))
    return sorted(names)


def _token_fields(batch) -> dict:
    """The integer tensors of a one-sample batch: input_ids and labels (SFT; position_ids for packed rows),
    or each trainer's own preference layout (trl: prompt_/chosen_/rejected_input_ids)."""
    import torch

    if isinstance(batch, list):  # GRPO: the rows themselves; the trainer generates from their prompt tokens
        row = batch[0] if batch else {}
        ids = row.get("prompt_ids") or (row.get("chat_template_kwargs") or {}).get("unifier_input_ids")
        return {"prompt_ids": list(ids)} if ids is not None else {}
    return {
        key: value[0].tolist()
        for key, value in batch.items()
        if isinstance(value, torch.Tensor)
        and not value.is_floating_point()
        and value.dim() >= 1
        and not key.endswith("attention_mask")
    }


def _canonical(name: str) -> str:
    """Names differ only in wrappers some trainers add (DDP 'module.', compiled '_orig_mod.')."""
    for prefix in ("module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def trainable_digest(model) -> str:
    """sha256 over the names and float32 values of the trainable parameters (DDP/compile wrappers ignored):
    two ranks that trained one model together report the same digest."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    trainable = sorted((_canonical(n), p) for n, p in model.named_parameters() if p.requires_grad)
    with gathered_parameters([param for _, param in trainable]):
        for name, param in trainable:
            digest.update(name.encode())
            value = (
                param.full_tensor() if hasattr(param, "full_tensor") else param
            )  # an FSDP2 shard: all of it
            digest.update(value.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gathered_parameters(params):
    """ZeRO-3 keeps a slice of each parameter per rank (the tensor itself is empty): gather them whole for the
    digest (a collective: every rank calls it, in the same order). Anything else needs nothing."""
    import contextlib

    if not any(hasattr(param, "ds_id") for param in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)
