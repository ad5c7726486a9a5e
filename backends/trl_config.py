"""Spec sections -> transformers / peft / trl / bitsandbytes keyword arguments (the peft and unsloth backends).

One function per spec section, each returning a fragment of the program's CONFIG: top-level keys, and
`trainer_args` for SFTConfig / DPOConfig. Every value is passed explicitly, so no library default leaks
into a run (trl's bf16=True on CPU, its shuffling, its NaN-filtered loss logging...).
"""

from __future__ import annotations

import copy
from typing import Any

from unifier import methods as method_table
from unifier.reporting import tracker_env

from .base import PlanContext


def chat_template_file(ctx: PlanContext) -> str | None:
    """The template the run trained with (written into the run folder before training), so the saved tokenizer
    carries it: chat, eval and export render with it. None for raw text, which trains no chat format."""
    return None if ctx.data_kind == "text" else str(ctx.folder.chat_template)


def target_modules(ctx: PlanContext) -> list[str] | str:
    """The resolved module list (the same on every backend); 'all-linear' only while it cannot be resolved."""
    return list(ctx.target_modules) if ctx.target_modules is not None else "all-linear"


def model_section(ctx: PlanContext) -> dict[str, Any]:
    m = ctx.spec.model
    return {
        "model": ctx.weights_location,
        # pre-quantized weights: loaded as stored (their own quantization_config); merging uses the original
        "prequantized": ctx.prequantized is not None,
        "prequantized_from": ctx.prequantized.original if ctx.prequantized else None,
        "revision": m.revision,
        "trust_remote_code": m.trust_remote_code,
        "dtype": m.dtype,
        "chat_template_file": chat_template_file(ctx),
        # GRPO bounds prompt + completion itself (grpo.max_completion_length; unifier checks the prompts)
        **(
            {"trainer_args": {"max_length": m.max_seq_length}}
            if method_table.method(ctx.spec.training.method).trl_max_length
            else {}
        ),
    }


def lora_section(ctx: PlanContext) -> dict[str, Any]:
    a = ctx.spec.adapter
    if a.type == "full":
        return {"lora": None}
    return {
        "lora": {
            "r": a.r,
            "lora_alpha": a.alpha,
            "lora_dropout": a.dropout,
            "target_modules": target_modules(ctx),
            "use_rslora": a.use_rslora,
            "use_dora": a.use_dora,
            "modules_to_save": list(a.modules_to_save) or None,
            "bias": "none",
        }
    }


def bnb_section(ctx: PlanContext) -> dict[str, Any]:
    q, m = ctx.spec.quantization, ctx.spec.model
    if q.bits is None or ctx.prequantized:  # a pre-quantized checkpoint brings its own, applied once
        return {"quantization": None}
    if q.bits == 8:
        return {"quantization": {"load_in_8bit": True}}
    return {
        "quantization": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": q.quant_type,
            "bnb_4bit_use_double_quant": q.double_quant,
            "bnb_4bit_compute_dtype": q.compute_dtype or m.dtype,
        }
    }


def data_section(ctx: PlanContext) -> dict[str, Any]:
    """The rows are unifier's encoded tokens (data/*.tokens.jsonl): trl tokenizes nothing and masks with their
    assistant_masks (assistant_only_loss / completion_only_loss would re-derive masks: off)."""
    d, method = ctx.spec.data, ctx.spec.training.method
    args: dict[str, Any] = {
        "data_seed": d.seed,
        "train_sampling_strategy": "sequential",  # unifier shuffled the file already
        "dataloader_num_workers": 0,
    }
    if method == "grpo":
        args["shuffle_dataset"] = False  # unifier shuffled the file already
    if method == "sft":
        args.update(
            {
                "packing": d.packing,
                "shuffle_dataset": False,
                "assistant_only_loss": False,
                "completion_only_loss": False,
            }
        )
    return {"eval": ctx.has_eval, "data_kind": ctx.data_kind, "trainer_args": args}


def optimisation_section(ctx: PlanContext) -> dict[str, Any]:
    t = ctx.spec.training
    args: dict[str, Any] = {
        "num_train_epochs": ctx.trainer_epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.scheduler[0],
        **({"lr_scheduler_kwargs": t.scheduler[1]} if t.scheduler[1] else {}),
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
        # FSDP2 checkpoints activations itself (FSDP2_PRESET); transformers refuses both at once
        "gradient_checkpointing": t.gradient_checkpointing and not shards_with_fsdp2(ctx),
        "seed": t.seed,
    }
    return {
        "seed": t.seed,
        "gradient_checkpointing": t.gradient_checkpointing,
        "trainer_args": args,
    }


def method_section(ctx: PlanContext) -> dict[str, Any]:
    """training.method and its options section -> the trl trainer and config class, and their arguments."""
    t = ctx.spec.training
    entry = method_table.method(t.method)
    args: dict[str, Any] = {}
    if t.method == "dpo":
        args = {"beta": t.dpo.beta, "loss_type": [t.dpo.loss_type]}
    elif t.method == "kto":
        k = t.kto
        args = {
            "beta": k.beta,
            "desirable_weight": k.desirable_weight,
            "undesirable_weight": k.undesirable_weight,
            "loss_type": k.loss_type,
            "remove_unused_columns": False,  # the trainer reads the label and the KL answers
        }
    elif t.method == "orpo":
        args = {"beta": t.orpo.beta}
    elif t.method == "simpo":
        args = {
            "loss_type": "simpo",
            "beta": t.simpo.beta,
            "simpo_gamma": t.simpo.gamma,
            "cpo_alpha": t.simpo.nll_weight,
            "label_smoothing": 0.0,
        }
    elif t.method == "reward":
        args = {"center_rewards_coefficient": t.reward.center_coefficient or None}
    elif t.method == "grpo":
        g = t.grpo
        args = {
            "num_generations": g.num_generations,
            "max_completion_length": g.max_completion_length,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "top_k": 0,
            "repetition_penalty": 1.0,
            "beta": g.beta,
            "loss_type": g.loss_type,
            "scale_rewards": g.scale_rewards,
            "epsilon": g.epsilon,
            "num_iterations": 1,
            "steps_per_generation": t.gradient_accumulation_steps,
            "mask_truncated_completions": False,
            "reward_weights": list(g.reward_weights) if g.reward_weights else None,
            "use_vllm": False,  # CPU and the tests generate with transformers; vLLM is a GPU option (not yet)
            "log_completions": False,
            "remove_unused_columns": False,  # the rows' prompt_ids and reward columns reach the trainer
        }
    if t.method in ("kto", "orpo", "simpo", "grpo", "reward"):
        args["disable_dropout"] = True  # trl's default, which ms-swift keeps too (it has no flag for it)
    fragment: dict[str, Any] = {
        "method": t.method,
        "task": "sequence_score" if entry.scores_text else "causal_lm",
        **({"rewards": reward_entries(t.grpo.rewards)} if t.method == "grpo" else {}),
        "trainer_classes": {"config": entry.trl_config_import, "trainer": entry.trl_trainer},
    }
    return {**fragment, "trainer_args": args} if args else fragment


def reward_entries(rewards: list[str]) -> list[dict[str, Any]]:
    """training.grpo.rewards as the training program (and `unify eval`) loads them: a built-in by name, or a
    file and a function (already resolved to an absolute path by spec loading)."""
    entries: list[dict[str, Any]] = []
    for name in rewards:
        file, _, function = name.rpartition(":")
        entries.append({"file": file, "function": function} if file else {"builtin": name})
    return entries


# compute.strategy fsdp2: ms-swift's preset (swift/config/fsdp2.json), so both backends shard the same way
FSDP2_PRESET = {
    "fsdp": "full_shard auto_wrap",
    "fsdp_config": {
        "fsdp_version": 2,
        "reshard_after_forward": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": True,
    },
}


def shards_with_fsdp2(ctx: PlanContext) -> bool:
    return ctx.multi_process and ctx.spec.compute.strategy == "fsdp2"


def deepspeed_config(strategy: str) -> dict[str, Any]:
    """compute.strategy zero2 / zero3 (/ _offload): ms-swift's DeepSpeed presets (swift/config/zero*.json);
    "auto" values are filled in by transformers from the trainer's arguments."""
    stage = 3 if strategy.startswith("zero3") else 2
    device = "cpu" if strategy.endswith("_offload") else "none"
    zero: dict[str, Any] = {
        "stage": stage,
        "offload_optimizer": {"device": device, "pin_memory": True},
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if stage == 2:
        zero.update(
            allgather_partitions=True,
            allgather_bucket_size=2e8,
            reduce_scatter=True,
            reduce_bucket_size=2e8,
        )
    else:
        zero.update(
            offload_param={"device": device, "pin_memory": True},
            sub_group_size=1e9,
            reduce_bucket_size="auto",
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_max_live_parameters=1e9,
            stage3_max_reuse_distance=1e9,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    return {
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 2000,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }


def compute_section(ctx: PlanContext) -> dict[str, Any]:
    dtype, strategy = ctx.spec.model.dtype, ctx.spec.compute.strategy
    args: dict[str, Any] = {"bf16": dtype == "bfloat16", "fp16": dtype == "float16", "use_cpu": ctx.on_cpu}
    if shards_with_fsdp2(ctx):
        args.update(copy.deepcopy(FSDP2_PRESET))
    if strategy.startswith("zero"):  # one process: only *_offload passes check() (ZeRO-Offload)
        args["deepspeed"] = deepspeed_config(strategy)
    return {"trainer_args": args}


def output_section(ctx: PlanContext) -> dict[str, Any]:
    t, o = ctx.spec.training, ctx.spec.output
    evaluates = ctx.has_eval and bool(t.eval_steps)
    args: dict[str, Any] = {
        "output_dir": str(ctx.folder.checkpoints),
        "logging_steps": t.logging_steps,
        "logging_nan_inf_filter": False,  # a NaN loss must be seen, not averaged away
        # resumable checkpoints every save_steps, and always at the last step (transformers saves it)
        "save_strategy": "steps",
        "save_steps": t.save_steps or 10**9,
        "save_total_limit": t.save_total_limit,
        "eval_strategy": "steps" if evaluates else "no",
        "report_to": list(o.report_to),
        "include_num_input_tokens_seen": "all",  # same count as ms-swift (which takes only true/false)
        "disable_tqdm": False,
    }
    if evaluates:
        args["eval_steps"] = t.eval_steps
    return {
        "save": o.save,
        "paths": ctx.folder.paths(),
        "tracker_env": tracker_env(o.report_to, ctx.folder.logs),
        "resume_from_checkpoint": ctx.resume_from,
        "trainer_args": args,
    }


def merge_fragments(fragments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Section fragments -> one CONFIG, merging nested mappings (trainer_args, from_pretrained...). A value set
    by two sections is a translation bug, raised at once."""
    config: dict[str, Any] = {"trainer_args": {}}
    owner: dict[str, str] = {}
    for section, fragment in fragments.items():
        _merge_into(config, fragment, section, owner, prefix="")
    return config


def _merge_into(target: dict, fragment: dict, section: str, owner: dict[str, str], prefix: str) -> None:
    for key, value in fragment.items():
        path = f"{prefix}{key}"
        if path in owner:
            raise AssertionError(f"{path} is translated by both the {owner[path]} and the {section} section")
        if isinstance(value, dict) and value:
            if key not in target:
                target[key] = {}
            elif not isinstance(target[key], dict):
                raise AssertionError(
                    f"{path} is a value in one section and a mapping in the {section} section"
                )
            _merge_into(target[key], value, section, owner, prefix=path + ".")
            continue
        if key in target and isinstance(target[key], dict) and target[key]:
            raise AssertionError(f"{path} is a mapping in one section and a value in the {section} section")
        owner[path] = section
        target[key] = value
