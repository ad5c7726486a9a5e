"""Pure translation of a spec into transformers/peft/trl arguments (shared by peft and unsloth).

Every value is passed explicitly, so no library default leaks into a run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unifier.spec import JobSpec
from unifier.tiny import ASSETS, resolve_model_ref


def run_paths(run_dir: str) -> dict[str, str]:
    root = Path(run_dir)
    return {
        "train_file": str(root / "data" / "train.jsonl"),
        "eval_file": str(root / "data" / "eval.jsonl"),
        "adapter_dir": str(root / "adapter"),
        "model_dir": str(root / "model"),
        "merged_dir": str(root / "merged"),
        "native_dir": str(root / "native"),
    }


def chat_template_file(spec: JobSpec) -> str | None:
    choice = spec.model.chat_template
    if choice == "chatml":
        return str(ASSETS / "chatml.jinja")
    if choice == "tokenizer":
        return None
    return os.path.abspath(choice)


def lora_kwargs(spec: JobSpec) -> dict[str, Any] | None:
    a = spec.adapter
    if a.type == "full":
        return None
    return {
        "r": a.r, "lora_alpha": a.alpha, "lora_dropout": a.dropout, "target_modules": a.target_modules,
        "use_rslora": a.use_rslora, "use_dora": a.use_dora, "modules_to_save": list(a.modules_to_save) or None,
        "bias": "none",
    }


def bnb_kwargs(spec: JobSpec) -> dict[str, Any] | None:
    q = spec.quantization
    if q.bits is None:
        return None
    if q.bits == 8:
        return {"load_in_8bit": True}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": q.quant_type, "bnb_4bit_use_double_quant": q.double_quant,
            "bnb_4bit_compute_dtype": q.compute_dtype or spec.model.dtype}


def device_is_cpu(spec: JobSpec) -> bool:
    """compute.device auto resolves by looking for CUDA without importing torch (nvidia-smi / env)."""
    if spec.compute.device != "auto":
        return spec.compute.device == "cpu"
    return not cuda_visible()


def trains_on_cpu(spec: JobSpec, here: bool = True) -> bool:
    """For check(): compute.device cpu always counts; 'auto' counts only when judging this machine (here=True)."""
    return spec.compute.device == "cpu" or (here and device_is_cpu(spec))


def cuda_visible() -> bool:
    import shutil

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def trainer_args(spec: JobSpec, run_dir: str, *, data_kind: str) -> dict[str, Any]:
    """SFTConfig / DPOConfig keyword arguments."""
    t, d = spec.training, spec.data
    paths = run_paths(run_dir)
    has_eval = bool(d.eval or d.eval_split)
    args: dict[str, Any] = {
        "output_dir": str(Path(paths["native_dir"]) / "checkpoints"),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_steps if t.warmup_steps else t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "optim": t.optimizer,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "adam_epsilon": t.adam_epsilon,
        "max_grad_norm": t.max_grad_norm,
        "per_device_train_batch_size": t.per_device_batch_size,
        "per_device_eval_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "gradient_checkpointing": t.gradient_checkpointing,
        "seed": t.seed,
        "data_seed": d.seed,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        "eval_strategy": "steps" if (has_eval and t.eval_steps) else "no",
        "bf16": spec.model.dtype == "bfloat16",
        "fp16": spec.model.dtype == "float16",
        "use_cpu": device_is_cpu(spec),
        "train_sampling_strategy": "sequential",  # unifier shuffled the file already
        "report_to": [],
        "include_num_input_tokens_seen": "all",  # same count as ms-swift (which takes only true/false)
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "max_length": spec.model.max_seq_length,
    }
    if t.save_steps:
        args["save_steps"] = t.save_steps
    if has_eval and t.eval_steps:
        args["eval_steps"] = t.eval_steps
    if t.method == "dpo":
        args.update({"beta": t.dpo.beta, "loss_type": [t.dpo.loss_type]})
    else:
        args.update({
            "packing": d.packing,
            "shuffle_dataset": False,
            "assistant_only_loss": data_kind == "chat" and d.assistant_only_loss,
            "dataset_text_field": "text",
        })
    return args
