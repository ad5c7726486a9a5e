"""The ms-swift backend: one recipe becomes a `swift sft` / `swift rlhf` command.

Every hyperparameter is passed explicitly: ms-swift's own defaults (weight decay 0.1, beta2 0.95,
cosine schedule, LoRA alpha 32 / dropout 0.05, automatic gradient accumulation, fp16 on float32
models, its own shuffling, versioned output folders) never reach a unifier run. unifier's callbacks
(metrics, probe, rank digests) ride along as an ms-swift external plugin (backends/swift_plugin.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unifier import methods as method_table
from unifier.errors import UserError
from unifier.model_info import ModelInfo, read_model_info
from unifier.reporting import tracker_env
from unifier.runfolder import RunFolder
from unifier.spec import JobSpec

from . import trl_config
from .base import (
    Backend,
    Capabilities,
    PlanContext,
    RunResult,
    deepspeed_problems,
    missing_packages,
    prequantized_weights,
    trains_on_cpu,
)
from .plan import CollectCheckpoint, CommandProgram, DataView, MergeAdapter, Plan, grouped_flags
from .ranks import check_ranks

PLUGIN = Path(__file__).with_name("swift_plugin.py")
# config.json model_type -> ms-swift --model_type, for local folders (hub names are resolved by ms-swift itself)
SWIFT_MODEL_TYPES = {
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "llama": "llama",
    "mistral": "mistral",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3_text",
    "phi3": "phi3",
    "glm4": "glm4",
}
STRATEGY_FLAGS = {
    "zero2": [("--deepspeed", "zero2")],
    "zero2_offload": [("--deepspeed", "zero2_offload")],
    "zero3": [("--deepspeed", "zero3")],
    "zero3_offload": [("--deepspeed", "zero3_offload")],
    "fsdp2": [("--fsdp", "fsdp2")],
    "ddp": [],
}
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
SWIFT_LAYOUT = "swift"  # the data view: ms-swift's messages / rejected_messages rows with unifier's tokens
TOKENS_TEMPLATE = "unifier_tokens"  # registered by swift_plugin.py: trains the rows' own tokens and labels


def flag(value: bool) -> str:
    return "true" if value else "false"


def argv_of(flags: list[tuple[str, Any]]) -> list[str]:
    """[("--lora_rank", 8), ("--use_dora", False), ("--target_modules", ["q", "v"])] -> ms-swift's argv."""
    argv: list[str] = []
    for name, value in flags:
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [name, *(flag(v) if isinstance(v, bool) else str(v) for v in values)]
    return argv


class SwiftBackend(Backend):
    requires = ("torch", "transformers", "peft", "trl", "swift")
    option_groups = None  # backend_options.swift: raw `--key value` flags
    capabilities = Capabilities(
        methods=("sft", "dpo", "kto", "orpo", "simpo", "reward", "grpo"),
        strategies=("ddp", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2"),
        multi_node=True,
        packing="GPU only",
        notes=(
            "packing needs flash-attention (GPU); on CPU it is refused",
            "multi-process CPU runs use --use_cpu true (gloo DDP or FSDP2) and are checked for identical rank weights",
            "fsdp2 uses ms-swift's preset: full sharding with activation checkpointing always on",
            "DeepSpeed ZeRO-2/3 needs the deepspeed package; on CPU it runs over gloo on 2+ processes",
        ),
    )

    def backend_problems(self, spec: JobSpec, here: bool) -> list[str]:
        problems = []
        on_cpu = trains_on_cpu(spec, here)
        if spec.data.packing and on_cpu:
            problems.append(
                "data.packing with ms-swift needs flash-attention on a GPU; set data.packing: false on CPU"
            )
        problems += deepspeed_problems(spec, here)
        try:
            swift_model_type(spec)
        except UserError as exc:
            problems.append(exc.message)
        if not here:
            return problems
        if spec.data.packing:
            problems += [
                f"missing package: {m} (data.packing with ms-swift needs it: pip install flash-attn)"
                for m in missing_packages(("flash_attn",))
            ]
        return problems

    def option_names(self, spec, group):
        """ms-swift's flags: its argument dataclasses and the transformers TrainingArguments they extend."""
        from .signatures import dataclass_fields, package_dataclass_fields

        names = package_dataclass_fields("swift.arguments")
        trainer = dataclass_fields("transformers.training_args_seq2seq", "Seq2SeqTrainingArguments")
        if names is None:
            return None
        return names | (trainer or frozenset()) | {"model_type"}

    def option_types(self, spec, group):
        """The flags' annotations: TrainingArguments' (its enums: schedulers, optimizers, strategies), then
        ms-swift's own dataclasses."""
        from .signatures import dataclass_annotations, package_dataclass_annotations

        types = dict(dataclass_annotations("transformers.training_args", "TrainingArguments") or {})
        types.update(package_dataclass_annotations("swift.arguments") or {})
        return types or None

    # ---- translation (pure): one argv fragment (and environment) per spec section ----
    def translate_model(self, ctx: PlanContext) -> dict[str, Any]:
        m = ctx.spec.model
        # --use_hf: a hub name means the Hugging Face Hub on every backend (ms-swift's own default is ModelScope)
        flags = [("--model", ctx.weights_location), ("--use_hf", "true")]
        model_type = swift_model_type(ctx.spec)
        if model_type:
            flags.append(("--model_type", model_type))
        if m.revision:
            flags.append(("--model_revision", m.revision))
        # ms-swift trains the tokens and labels unifier's encoder wrote (the plugin's template, see swift_plugin.py)
        flags += [
            ("--template", TOKENS_TEMPLATE),
            ("--torch_dtype", m.dtype),
            ("--max_length", m.max_seq_length),
        ]
        if m.trust_remote_code:
            flags.append(("--model_kwargs", json.dumps({"trust_remote_code": True})))
        env = {"UNIFIER_TRUST_REMOTE_CODE": flag(m.trust_remote_code)}  # read by the plugin (see there)
        if ctx.model.is_local:
            env["HF_HUB_OFFLINE"] = "1"  # a local folder: no hub lookups at all
        return {"argv": argv_of(flags), "env": env}

    def translate_adapter(self, ctx: PlanContext) -> dict[str, Any]:
        a = ctx.spec.adapter
        flags: list[tuple[str, Any]] = [("--tuner_type", "full" if a.type == "full" else "lora")]
        if a.type != "full":
            flags += [
                ("--lora_rank", a.r),
                ("--lora_alpha", a.alpha),
                ("--lora_dropout", a.dropout),
                ("--use_rslora", a.use_rslora),
                ("--use_dora", a.use_dora),
                ("--lora_bias", "none"),
                ("--target_modules", trl_config.target_modules(ctx)),
            ]
        if a.modules_to_save:
            flags.append(("--modules_to_save", a.modules_to_save))
        return {"argv": argv_of(flags)}

    def translate_quantization(self, ctx: PlanContext) -> dict[str, Any]:
        q, m = ctx.spec.quantization, ctx.spec.model
        if (
            q.bits is None or ctx.prequantized
        ):  # a pre-quantized checkpoint loads with its own quantization_config
            return {"argv": []}
        flags: list[tuple[str, Any]] = [("--quant_method", "bnb"), ("--quant_bits", q.bits)]
        if q.bits == 4:
            flags += [
                ("--bnb_4bit_quant_type", q.quant_type),
                ("--bnb_4bit_use_double_quant", q.double_quant),
                ("--bnb_4bit_compute_dtype", q.compute_dtype or m.dtype),
            ]
        return {"argv": argv_of(flags)}

    def translate_data(self, ctx: PlanContext) -> dict[str, Any]:
        d = ctx.spec.data
        flags: list[tuple[str, Any]] = [
            ("--dataset", data_file(ctx, "train")),
            ("--split_dataset_ratio", 0),
            ("--dataset_shuffle", False),
            ("--train_dataloader_shuffle", False),
            # transformers 5 reads its own sampler setting where ms-swift's sampler is not used (its rlhf trainers)
            ("--train_sampling_strategy", "sequential"),
            ("--data_seed", d.seed),
            ("--dataset_num_proc", 1),
            ("--load_from_cache_file", False),
            ("--dataloader_num_workers", 0),
            # GRPO: ms-swift refuses right truncation; unifier's prompts fit max_seq_length, nothing is cut
            ("--truncation_strategy", "delete" if ctx.spec.training.method == "grpo" else "right"),
            (
                "--remove_unused_columns",
                False,
            ),  # the rows' unifier_input_ids / unifier_labels reach the template
            ("--packing", d.packing),
        ]
        if d.packing:
            flags.append(("--attn_impl", "flash_attn"))
        if ctx.has_eval:
            flags.append(("--val_dataset", data_file(ctx, "eval")))
        return {"argv": argv_of(flags)}

    def translate_optimisation(self, ctx: PlanContext) -> dict[str, Any]:
        t = ctx.spec.training
        flags: list[tuple[str, Any]] = [
            ("--num_train_epochs", ctx.trainer_epochs),
            ("--max_steps", t.max_steps or -1),
            ("--learning_rate", t.learning_rate),
            ("--lr_scheduler_type", t.scheduler[0]),
            *([("--lr_scheduler_kwargs", json.dumps(t.scheduler[1]))] if t.scheduler[1] else []),
            # ms-swift reads --warmup_ratio itself (and refuses it beside --warmup_steps): the flag says what it is
            ("--warmup_steps", t.warmup_steps)
            if t.warmup_steps or not t.warmup_ratio
            else ("--warmup_ratio", t.warmup_ratio),
            ("--weight_decay", t.weight_decay),
            ("--optim", t.optimizer),
            ("--adam_beta1", t.adam_beta1),
            ("--adam_beta2", t.adam_beta2),
            ("--adam_epsilon", t.adam_epsilon),
            ("--max_grad_norm", t.max_grad_norm),
            ("--per_device_train_batch_size", t.per_device_batch_size),
            ("--per_device_eval_batch_size", t.per_device_batch_size),
            ("--gradient_accumulation_steps", t.gradient_accumulation_steps),
            ("--gradient_checkpointing", t.gradient_checkpointing),
            ("--seed", t.seed),
        ]
        return {"argv": argv_of(flags)}

    def translate_method(self, ctx: PlanContext) -> dict[str, Any]:
        """`swift rlhf --rlhf_type ...` and the method's options, every one passed (ms-swift's own defaults
        differ from trl's: simpo's beta 2.0 and cpo_alpha 1.0, ...)."""
        t = ctx.spec.training
        rlhf_type = method_table.method(t.method).swift_rlhf_type
        flags: list[tuple[str, Any]] = [("--rlhf_type", rlhf_type)] if rlhf_type else []
        if t.method == "dpo":
            flags += [("--beta", t.dpo.beta), ("--loss_type", t.dpo.loss_type)]
        elif t.method == "kto":
            k = t.kto
            flags += [
                ("--beta", k.beta),
                ("--desirable_weight", k.desirable_weight),
                ("--undesirable_weight", k.undesirable_weight),
                ("--loss_type", k.loss_type),
            ]
        elif t.method == "orpo":
            flags += [("--beta", t.orpo.beta)]
        elif t.method == "simpo":
            flags += [
                ("--beta", t.simpo.beta),
                ("--simpo_gamma", t.simpo.gamma),
                ("--cpo_alpha", t.simpo.nll_weight),
                ("--loss_type", "simpo"),
                ("--label_smoothing", 0.0),
            ]
        elif t.method == "reward":  # ms-swift's rm: a seq_cls model with one label
            flags += (
                [("--center_rewards_coefficient", t.reward.center_coefficient)]
                if t.reward.center_coefficient
                else []
            )
        elif t.method == "grpo":
            return self._grpo_flags(ctx, flags)
        return {"argv": argv_of(flags)}

    def _grpo_flags(self, ctx: PlanContext, flags: list[tuple[str, Any]]) -> dict[str, Any]:
        """GRPO: every sampling and loss setting passed (ms-swift's own: temperature 0.9, beta 0.04, loss grpo,
        512 completion tokens); the rewards are unifier's, registered by the plugin under their own names from
        UNIFIER_GRPO_REWARDS, so metrics.jsonl has rewards/<name>/mean on every backend."""
        t = ctx.spec.training
        g = t.grpo
        entries = trl_config.reward_entries(ctx.spec.training.grpo.rewards)
        flags += [
            ("--reward_funcs", [entry.get("builtin") or entry["function"] for entry in entries]),
            *([("--reward_weights", list(g.reward_weights))] if g.reward_weights else []),
            ("--num_generations", g.num_generations),
            ("--max_completion_length", g.max_completion_length),
            ("--temperature", g.temperature),
            ("--top_p", g.top_p),
            ("--top_k", -1),
            ("--repetition_penalty", 1.0),
            ("--beta", g.beta),
            ("--loss_type", g.loss_type),
            ("--scale_rewards", g.scale_rewards),
            ("--epsilon", g.epsilon),
            ("--num_iterations", 1),
            ("--steps_per_generation", t.gradient_accumulation_steps),
            ("--use_vllm", False),
            ("--log_completions", False),
        ]
        rewards = {
            "rewards": entries,
            "max_completion_length": g.max_completion_length,
            "tokenizer": ctx.model.location,
        }
        return {"argv": argv_of(flags), "env": {"UNIFIER_GRPO_REWARDS": json.dumps(rewards)}}

    def translate_compute(self, ctx: PlanContext) -> dict[str, Any]:
        c, dtype = ctx.spec.compute, ctx.spec.model.dtype
        flags: list[tuple[str, Any]] = [("--fp16", dtype == "float16"), ("--bf16", dtype == "bfloat16")]
        if ctx.on_cpu:
            flags.append(("--use_cpu", True))
        env = {}
        flags += STRATEGY_FLAGS[c.strategy]  # one process: only *_offload passes check() (ZeRO-Offload)
        if ctx.on_cpu and c.strategy.startswith("zero"):
            env["UNIFIER_DEEPSPEED_OVER_GLOO"] = (
                "1"  # the plugin starts DeepSpeed's communication (see there)
            )
        if ctx.multi_process:
            env.update(
                NPROC_PER_NODE=str(c.nproc_per_node),
                NNODES=str(c.nnodes),
                NODE_RANK=str(c.node_rank),
                MASTER_ADDR=c.master_addr,
                MASTER_PORT=str(c.master_port),
            )
        return {"argv": argv_of(flags), "env": env}

    def translate_output(self, ctx: PlanContext) -> dict[str, Any]:
        t = ctx.spec.training
        evaluates = ctx.has_eval and bool(t.eval_steps)
        flags: list[tuple[str, Any]] = [
            ("--output_dir", ctx.folder.checkpoints),
            ("--add_version", False),
            ("--check_model", False),
            ("--logging_steps", t.logging_steps),
            ("--logging_nan_inf_filter", False),  # a NaN loss must be seen, not averaged away
            # resumable checkpoints every save_steps and at the last step: optimizer, scheduler, RNG too
            ("--save_strategy", "steps"),
            ("--save_steps", t.save_steps or 10**9),
            ("--save_only_model", False),
        ]
        if t.save_total_limit:
            flags.append(("--save_total_limit", t.save_total_limit))
        flags.append(("--eval_strategy", "steps" if evaluates else "no"))
        if evaluates:
            flags.append(("--eval_steps", t.eval_steps))
        flags += [
            ("--report_to", list(ctx.spec.output.report_to) or "none"),
            ("--include_num_input_tokens_seen", True),
            ("--external_plugins", PLUGIN),
            ("--callbacks", list(plugin_callbacks(ctx))),
        ]
        if ctx.resume_from:
            flags.append(("--resume_from_checkpoint", ctx.resume_from))
        env = {
            "UNIFIER_RUN_DIR": str(ctx.folder.root),
            **tracker_env(ctx.spec.output.report_to, ctx.folder.logs),
        }
        return {"argv": argv_of(flags), "env": env}

    def assemble(self, ctx: PlanContext, fragments: dict[str, Any]) -> Plan:
        argv: list[str] = []
        env: dict[str, str] = {}
        for fragment in fragments.values():
            argv += fragment["argv"]
            env.update(fragment.get("env", {}))
        argv = with_options(argv, ctx.options(self.name))
        subcommand = "rlhf" if method_table.method(ctx.spec.training.method).swift_rlhf_type else "sft"
        program = CommandProgram(
            argv=("swift", subcommand, *argv),
            env=env,
            path=str(ctx.folder.native_program("command.sh")),
            in_process=None if ctx.multi_process else f"swift:{subcommand}_main",
        )
        views = tuple(
            DataView(
                split=split,
                source=str(ctx.folder.data_file(split)),
                path=str(ctx.folder.view_file(split, SWIFT_LAYOUT)),
                layout=SWIFT_LAYOUT,
            )
            for split in (("train", "eval") if ctx.has_eval else ("train",))
        )
        return Plan(
            backend=self.name,
            run_dir=str(ctx.folder.root),
            data_kind=ctx.data_kind,
            program=program,
            data_views=views,
            callbacks=plugin_callbacks(ctx),
            after_training=after_training(ctx),
            notes=target_notes(ctx),
            resume_from=ctx.resume_from,
            world_size=ctx.spec.compute.world_size,
        )

    def view_row(self, layout: str, row: dict, tokens: dict) -> dict:
        if layout != SWIFT_LAYOUT:
            return super().view_row(layout, row, tokens)
        return swift_row(row, tokens)

    # ---- running ----
    def run(self, plan: Plan) -> RunResult:
        from .inline_library import expand_references

        program = plan.program
        assert isinstance(program, CommandProgram)
        os.environ.update(program.env)
        if program.env.get("NODE_RANK", "0") == "0":  # other nodes of a multi-node run write nothing
            script = Path(program.path)
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(plan.render(), encoding="utf-8")
        argv = expand_references(list(program.argv))  # ${NAME} secrets: only the training process sees them
        if program.in_process:
            module, function = program.in_process.split(":")
            import importlib

            getattr(importlib.import_module(module), function)(argv[2:])
        else:
            from unifier import terminal

            # torchrun's workers cannot reach the terminal: unifier draws their progress from metrics.jsonl
            with terminal.progress_from_metrics(RunFolder(plan.run_dir).metrics, planned_steps(argv)):
                launch(argv, program.env, str(RunFolder(plan.run_dir).ranks))
        from .after_training import run_step

        details: dict[str, Any] = {
            "process_mode": "in-process" if program.in_process else "subprocess (torchrun)"
        }
        from unifier.interrupts import requested

        for step in plan.after_training:
            if requested() is not None and isinstance(step, MergeAdapter):
                continue  # stopped on a signal: the adapter of the checkpoint, no slow merge
            details.update(run_step(step))
        return RunResult(native_command=plan.render(), backend_details=details)


def planned_steps(argv: list[str]) -> int | None:
    """--max_steps of a command line (None: the epochs decide)."""
    steps = int(argv[argv.index("--max_steps") + 1]) if "--max_steps" in argv else -1
    return steps if steps > 0 else None


def launch(argv: list[str], env: dict[str, str], ranks_dir: str) -> None:
    """What `swift sft` does with NPROC_PER_NODE set (torchrun over ms-swift's entry script), started directly
    so that torchrun is unifier's child (backends/ranks.py: the lock, signals, a failed rank named)."""
    import importlib.util

    from swift.cli.main import ROUTE_MAPPING, get_torchrun_args

    from .ranks import launch as launch_ranks

    os.environ.update(env)
    script = importlib.util.find_spec(ROUTE_MAPPING[argv[1]]).origin
    launch_ranks(get_torchrun_args() or [], [script, *argv[2:]], env, ranks_dir)


def swift_model_type(spec: JobSpec) -> str | None:
    """ms-swift's --model_type for a local folder, from its config.json (a hub name: ms-swift looks it up)."""
    options = spec.backend_options.get("swift", {})
    if "model_type" in options:
        return str(options["model_type"])
    info = read_model_info(spec.model.name_or_path, spec.model.revision)
    weights = prequantized_weights(spec)
    if weights and weights.original:  # unsloth's twin: ms-swift's registry does not know its name
        return twin_model_type(info, weights)
    if not info.is_local:
        return None
    model_type = info.model_type
    if model_type not in SWIFT_MODEL_TYPES:
        raise UserError(
            f"{info.location}/config.json: model_type '{model_type}' has no known ms-swift model_type; "
            "set backend_options.swift.model_type"
        )
    return SWIFT_MODEL_TYPES[model_type]


def twin_model_type(original: ModelInfo, weights) -> str:
    """ms-swift matches a hub name it does not register by the config's architectures, which for a twin such as
    Qwen3ForCausalLM fits several of its model_types (qwen3, qwen3_emb, qwen3_reranker): unifier names it, from
    the original's or the twin's config.json in the local hub cache, or asks for it."""
    model_type = original.model_type or read_model_info(weights.location, None).model_type
    if model_type in SWIFT_MODEL_TYPES:
        return SWIFT_MODEL_TYPES[model_type]
    raise UserError(
        f"ms-swift cannot tell the model_type of {weights.location} (unsloth's 4-bit twin of {weights.original}; "
        "its config.json is not in the local cache): set backend_options.swift.model_type (for example qwen3)"
    )


def plugin_callbacks(ctx: PlanContext) -> tuple[str, ...]:
    names = ["unifier_metrics", "unifier_health", "unifier_stop", "unifier_scrub", "unifier_progress"]
    if ctx.spec.quantization.bits == 4 and ctx.on_cpu:
        names.append("unifier_cpu_4bit")
    if ctx.multi_process:
        names.append("unifier_rank_check")
    if ctx.spec.output.probe:
        names.append("unifier_probe")
    if ctx.resume_from:
        names.append("unifier_schedule")
    return tuple(names)


def after_training(ctx: PlanContext) -> tuple:
    spec, folder = ctx.spec, ctx.folder
    full = spec.adapter.type == "full"
    steps: list = [
        CollectCheckpoint(
            run_dir=str(folder.root),
            target=str(folder.model if full else folder.adapter),
            tokenizer_from=ctx.model.location if ctx.model.is_local else None,
            chat_template=trl_config.chat_template_file(ctx),
        )
    ]
    if wants_merge(spec):
        steps.append(
            MergeAdapter(
                base=ctx.model.location,
                revision=spec.model.revision,
                trust_remote_code=spec.model.trust_remote_code,
                dtype=spec.model.dtype,
                adapter_dir=str(folder.adapter),
                merged_dir=str(folder.merged),
            )
        )
    if ctx.multi_process:
        steps.append(check_ranks(ctx))
    return tuple(steps)


def wants_merge(spec: JobSpec) -> bool:
    return spec.output.save in ("merged", "both") and spec.adapter.type != "full"


def target_notes(ctx: PlanContext) -> tuple[str, ...]:
    from .trl_backend import target_module_notes

    return target_module_notes(ctx)


def data_file(ctx: PlanContext, split: str) -> Path:
    return ctx.folder.view_file(split, SWIFT_LAYOUT)


def swift_row(row: dict, tokens: dict) -> dict:
    """One canonical row in ms-swift's standard format (messages / rejected_messages, which its dataset loader
    checks) with the encoder's tokens: unifier_input_ids / unifier_labels (and rejected_... for a preference
    pair, which ms-swift hands to the rejected side), what the plugin's template returns as the encoding."""
    if (
        "columns" in row
    ):  # a GRPO prompt: ms-swift generates from unifier's prompt tokens (the plugin's template)
        view = {
            "messages": row["prompt"],
            # ms-swift's GRPO gives its template only the messages, standard fields and chat_template_kwargs
            "chat_template_kwargs": {"unifier_input_ids": tokens["prompt_ids"]},
            "unifier_columns": json.dumps(row["columns"]),  # one JSON text: no Arrow typing of the values
        }
    elif "completion" in row:  # a KTO answer: the KL side is the answer unifier paired the prompt with
        prompt, kl = tokens["prompt_ids"], tokens["kl_completion_ids"]
        view = {
            "messages": row["prompt"] + row["completion"],
            "rejected_messages": row["prompt"]
            + [{"role": "assistant", "content": "(the KL answer: token ids)"}],
            "label": row["label"],
            "unifier_input_ids": prompt + tokens["completion_ids"],
            "unifier_labels": [-100] * len(prompt) + tokens["completion_ids"],
            "rejected_unifier_input_ids": prompt + kl,
            "rejected_unifier_labels": [-100] * len(prompt) + kl,
        }
    elif "chosen" in row:
        prompt = tokens["prompt_ids"]
        view = {
            "messages": row["prompt"] + row["chosen"],
            "rejected_messages": row["prompt"] + row["rejected"],
            "unifier_input_ids": prompt + tokens["chosen_ids"],
            "unifier_labels": [-100] * len(prompt) + tokens["chosen_ids"],
            "rejected_unifier_input_ids": prompt + tokens["rejected_ids"],
            "rejected_unifier_labels": [-100] * len(prompt) + tokens["rejected_ids"],
        }
    else:
        messages = [{"role": "assistant", "content": row["text"]}] if "text" in row else row["messages"]
        ids, mask = tokens["input_ids"], tokens["assistant_masks"]
        view = {
            "messages": messages,
            "unifier_input_ids": ids,
            "unifier_labels": [token if trained else -100 for token, trained in zip(ids, mask)],
        }
    if row.get("tools"):
        view["tools"] = row["tools"]
    return view


def with_options(argv: list[str], options: dict) -> list[str]:
    """backend_options.swift: raw `--key value` pairs, verbatim (lists become repeated values). A key unifier
    already passes is replaced, not repeated, so the printed command says each thing once."""
    flags = {f"--{key}" for key in options if key != "model_type"}  # model_type is read by swift_model_type()
    kept = [part for name, values in grouped_flags(argv) if name not in flags for part in (name, *values)]
    for key, value in options.items():
        if key == "model_type":
            continue
        values = value if isinstance(value, list) else [value]
        kept += [
            f"--{key}",
            *[
                flag(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, dict) else str(v))
                for v in values
            ],
        ]
    return kept


BACKEND_CLASS = SwiftBackend
