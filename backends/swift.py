"""The ms-swift backend: one recipe becomes a `swift sft` / `swift rlhf` command.

Every hyperparameter is passed explicitly: ms-swift's own defaults (weight decay 0.1, beta2 0.95,
cosine schedule, LoRA alpha 32 / dropout 0.05, automatic gradient accumulation, fp16 on float32
models, its own shuffling, versioned output folders) never reach a unifier run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from unifier.errors import UserError
from unifier.spec import JobSpec
from unifier.tiny import resolve_model_ref

from . import hf_args
from .base import Capabilities, Plan, RunResult, capability_problems, machine_problems, missing_packages

PLUGIN = Path(__file__).with_name("swift_plugin.py")
# config.json model_type -> ms-swift --model_type, for local folders (hub names are resolved by ms-swift itself)
SWIFT_MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe",
                     "llama": "llama", "mistral": "mistral", "gemma2": "gemma2", "gemma3_text": "gemma3_text",
                     "phi3": "phi3", "glm4": "glm4"}
STRATEGY_ARGS = {"zero2": ["--deepspeed", "zero2"], "zero2_offload": ["--deepspeed", "zero2_offload"],
                 "zero3": ["--deepspeed", "zero3"], "zero3_offload": ["--deepspeed", "zero3_offload"],
                 "fsdp2": ["--fsdp", "fsdp2"], "ddp": []}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def _flag(value: bool) -> str:
    return "true" if value else "false"


class SwiftBackend:
    name = "swift"
    description = "ms-swift 4.x (swift sft / swift rlhf): torchrun, DeepSpeed ZeRO-2/3, FSDP2, multi-node"
    requires = ("torch", "transformers", "peft", "trl", "swift")
    pip_extra = "swift"
    capabilities = Capabilities(
        strategies=("ddp", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2"), multi_node=True,
        notes=("packing needs flash-attention (GPU); on CPU it is refused",
               "multi-process CPU runs use --use_cpu true (gloo DDP or FSDP2) and are checked for identical rank weights",
               "fsdp2 uses ms-swift's preset: full sharding with activation checkpointing always on",
               "DeepSpeed ZeRO-2/3 needs GPUs and the deepspeed package"),
    )

    def check(self, spec: JobSpec, here: bool = True) -> list[str]:
        problems = capability_problems(spec, self.capabilities, self.name)
        on_cpu = hf_args.trains_on_cpu(spec, here)
        if spec.data.packing and on_cpu:
            problems.append("data.packing with ms-swift needs flash-attention on a GPU; set data.packing: false on CPU")
        if spec.model.chat_template not in ("chatml",) and "template" not in spec.options_for(self.name):
            problems.append(f"model.chat_template '{spec.model.chat_template}': tell ms-swift which template matches "
                            "with backend_options.swift.template (e.g. qwen3), or use chat_template: chatml")
        if spec.compute.strategy.startswith("zero") and on_cpu and spec.compute.world_size > 1:
            problems.append(f"compute.strategy '{spec.compute.strategy}' (DeepSpeed) needs GPUs; on CPU use ddp or fsdp2")
        try:
            self._model_type(spec)
        except UserError as exc:
            problems.append(exc.message)
        if not here:
            return problems
        if spec.compute.strategy.startswith("zero") and spec.compute.world_size > 1:
            problems += [f"missing package: {m} (pip install deepspeed)" for m in missing_packages(("deepspeed",))]
        if spec.data.packing:
            problems += [f"missing package: {m} (data.packing with ms-swift needs it: pip install flash-attn)"
                         for m in missing_packages(("flash_attn",))]
        return problems + machine_problems(spec, self.requires, self.pip_extra)

    # ---- translation (pure) ----
    def _model_type(self, spec: JobSpec) -> str | None:
        options = spec.options_for(self.name)
        if "model_type" in options:
            return str(options["model_type"])
        model = resolve_model_ref(spec.model.name_or_path)
        config = Path(model) / "config.json"
        if spec.model.name_or_path.startswith("builtin:"):
            return "qwen2"
        if not Path(model).is_dir():
            return None  # a hub name: ms-swift looks it up in its own registry
        if not config.is_file():
            raise UserError(f"{config}: missing; ms-swift needs it to pick --model_type")
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type not in SWIFT_MODEL_TYPES:
            raise UserError(f"{config}: model_type '{model_type}' has no known ms-swift model_type; set "
                            "backend_options.swift.model_type")
        return SWIFT_MODEL_TYPES[model_type]

    def environment(self, spec: JobSpec) -> dict[str, str]:
        c = spec.compute
        env = {}
        if c.world_size > 1:
            env.update(NPROC_PER_NODE=str(c.nproc_per_node), NNODES=str(c.nnodes), NODE_RANK=str(c.node_rank),
                       MASTER_ADDR=c.master_addr, MASTER_PORT=str(c.master_port))
        model = resolve_model_ref(spec.model.name_or_path)
        if Path(model).is_dir() or spec.model.name_or_path.startswith("builtin:"):
            env["HF_HUB_OFFLINE"] = "1"  # a local folder: no hub lookups at all
        return env

    def arguments(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> list[str]:
        t, d, a, q, m = spec.training, spec.data, spec.adapter, spec.quantization, spec.model
        paths = hf_args.run_paths(run_dir)
        has_eval = bool(d.eval or d.eval_split)
        # --use_hf: a hub name means the Hugging Face Hub on every backend (ms-swift's own default is ModelScope)
        args = ["--model", resolve_model_ref(m.name_or_path), "--use_hf", "true"]
        model_type = self._model_type(spec)
        if model_type:
            args += ["--model_type", model_type]
        if m.revision:
            args += ["--model_revision", m.revision]
        if m.chat_template == "chatml":
            args += ["--template", "chatml", "--agent_template", "hermes"]
        args += [
            "--torch_dtype", m.dtype, "--fp16", _flag(m.dtype == "float16"), "--bf16", _flag(m.dtype == "bfloat16"),
            "--tuner_type", "full" if a.type == "full" else "lora",
            "--dataset", swift_data_file(paths["train_file"], data_kind), "--split_dataset_ratio", "0",
            "--dataset_shuffle", "false", "--train_dataloader_shuffle", "false", "--data_seed", str(d.seed),
            "--dataset_num_proc", "1", "--load_from_cache_file", "false",
            "--max_length", str(m.max_seq_length), "--truncation_strategy", "right",
            "--loss_scale", swift_loss_scale(data_kind, d.assistant_only_loss),
            "--packing", _flag(d.packing), *(["--attn_impl", "flash_attn"] if d.packing else []),
            "--num_train_epochs", str(t.epochs), "--max_steps", str(t.max_steps or -1),
            "--learning_rate", str(t.learning_rate), "--lr_scheduler_type", t.lr_scheduler,
            "--warmup_steps", str(t.warmup_steps if t.warmup_steps else t.warmup_ratio),
            "--weight_decay", str(t.weight_decay), "--optim", t.optimizer,
            "--adam_beta1", str(t.adam_beta1), "--adam_beta2", str(t.adam_beta2), "--adam_epsilon", str(t.adam_epsilon),
            "--max_grad_norm", str(t.max_grad_norm),
            "--per_device_train_batch_size", str(t.per_device_batch_size),
            "--per_device_eval_batch_size", str(t.per_device_batch_size),
            "--gradient_accumulation_steps", str(t.gradient_accumulation_steps),
            "--gradient_checkpointing", _flag(t.gradient_checkpointing),
            "--seed", str(t.seed), "--logging_steps", str(t.logging_steps),
            # a final checkpoint is always written (save_steps falls back to "only at the end")
            "--save_strategy", "steps", "--save_steps", str(t.save_steps or 10**9),
            # FSDP2's sharded checkpoints refuse save_only_model; the adapter is saved in full either way
            "--save_only_model", _flag(not (spec.compute.world_size > 1 and spec.compute.strategy == "fsdp2")),
            "--eval_strategy", "steps" if (has_eval and t.eval_steps) else "no",
            "--output_dir", str(Path(paths["native_dir"]) / "swift"), "--add_version", "false",
            "--check_model", "false", "--report_to", "none", "--dataloader_num_workers", "0",
            "--include_num_input_tokens_seen", "true",
        ]
        if data_kind == "text":
            args += ["--use_chat_template", "false"]  # what `swift pt` does: raw text, no chat markup
        if has_eval:
            args += ["--val_dataset", swift_data_file(paths["eval_file"], data_kind)]
            if t.eval_steps:
                args += ["--eval_steps", str(t.eval_steps)]
        if a.type != "full":
            args += ["--lora_rank", str(a.r), "--lora_alpha", str(a.alpha), "--lora_dropout", str(a.dropout),
                     "--use_rslora", _flag(a.use_rslora), "--use_dora", _flag(a.use_dora), "--lora_bias", "none",
                     "--target_modules", *([a.target_modules] if isinstance(a.target_modules, str) else a.target_modules)]
        if a.modules_to_save:
            args += ["--modules_to_save", *a.modules_to_save]
        if q.bits is not None:
            args += ["--quant_method", "bnb", "--quant_bits", str(q.bits)]
            if q.bits == 4:
                args += ["--bnb_4bit_quant_type", q.quant_type, "--bnb_4bit_use_double_quant", _flag(q.double_quant),
                         "--bnb_4bit_compute_dtype", q.compute_dtype or m.dtype]
        if m.trust_remote_code:
            args += ["--model_kwargs", json.dumps({"trust_remote_code": True})]
        if t.method == "dpo":
            args += ["--rlhf_type", "dpo", "--beta", str(t.dpo.beta), "--loss_type", t.dpo.loss_type]
        if hf_args.device_is_cpu(spec):
            args += ["--use_cpu", "true"]
        callbacks = (["unifier_rank_check"] if spec.compute.world_size > 1 else []) + (["unifier_probe"] if spec.output.probe else [])
        if spec.compute.world_size > 1:
            args += STRATEGY_ARGS[spec.compute.strategy]
        if callbacks:
            args += ["--external_plugins", str(PLUGIN), "--callbacks", *callbacks]
        return with_options(args, spec.options_for(self.name))

    def plan(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> Plan:
        subcommand = "rlhf" if spec.training.method == "dpo" else "sft"
        argv = self.arguments(spec, run_dir, data_kind)
        env = self.environment(spec)
        return Plan(backend=self.name, run_dir=run_dir, kind="command",
                    payload={"subcommand": subcommand, "argv": argv, "env": env, "data_kind": data_kind},
                    script=render_command(subcommand, argv, env) + self._after_training(spec))

    @staticmethod
    def _after_training(spec: JobSpec) -> str:
        if wants_merge(spec):
            return ("# then unifier merges adapter/ into the base model in model.dtype (peft merge_and_unload) -> merged/,\n"
                    "# as the peft and unsloth backends do\n")
        return ""

    # ---- running ----
    def run(self, plan: Plan, spec: JobSpec) -> RunResult:
        payload = plan.payload
        native = Path(plan.run_dir) / "native" / "swift"
        os.environ.update(payload["env"])
        write_swift_views(Path(plan.run_dir) / "data", plan.payload["data_kind"])
        multi_process = spec.compute.world_size > 1
        if multi_process:
            self._run_subprocess(payload)
        else:
            self._run_in_process(payload)
        run_dir = Path(plan.run_dir)
        convert_logging(native / "logging.jsonl", run_dir / "metrics.jsonl")
        checkpoint = last_checkpoint(native)
        details = {"checkpoint": str(checkpoint), "process_mode": "subprocess (torchrun)" if multi_process else "in-process"}
        copy_outputs(checkpoint, spec, run_dir)
        if wants_merge(spec):
            details["merged"] = merge_outputs(spec, run_dir)
        if multi_process:
            details["rank_check"] = verify_ranks(native, spec)
        return RunResult(native_command=plan.script, backend_details=details)

    def _run_in_process(self, payload: dict) -> None:
        if payload["subcommand"] == "rlhf":
            from swift import rlhf_main as entry
        else:
            from swift import sft_main as entry
        entry(list(payload["argv"]))

    def _run_subprocess(self, payload: dict) -> None:
        swift = shutil.which("swift") or str(Path(sys.executable).with_name("swift"))
        env = {**os.environ, **payload["env"]}
        completed = subprocess.run([swift, payload["subcommand"], *payload["argv"]], env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"swift {payload['subcommand']} exited with code {completed.returncode}")


def swift_loss_scale(data_kind: str, assistant_only: bool) -> str:
    """Which tokens carry loss, as trl decides it: chat -> every assistant turn (or all tokens); text -> all;
    preference -> the final answer only (trl's completion_mask; ms-swift's 'all' would put the prompt into
    the chosen/rejected log-probabilities: the sigmoid loss cancels it, the logged rewards do not)."""
    if data_kind == "preference":
        return "last_round"
    return "default" if (data_kind == "chat" and assistant_only) else "all"


def swift_data_file(canonical: str, data_kind: str) -> str:
    """Chat rows are already ms-swift's messages format; preference and text rows get a derived view."""
    if data_kind == "chat":
        return canonical
    return canonical[: -len(".jsonl")] + ".swift.jsonl"


def swift_row(row: dict, data_kind: str) -> dict:
    """One canonical row in ms-swift's standard format (messages / rejected_messages / tools)."""
    if data_kind == "preference":
        view = {"messages": row["prompt"] + row["chosen"], "rejected_messages": row["prompt"] + row["rejected"]}
    elif data_kind == "text":
        view = {"messages": [{"role": "assistant", "content": row["text"]}]}
    else:
        return row
    if row.get("tools"):
        view["tools"] = row["tools"]
    return view


def write_swift_views(data_dir: Path, data_kind: str) -> None:
    if data_kind == "chat":
        return
    for split in ("train", "eval"):
        source = data_dir / f"{split}.jsonl"
        if source.is_file():
            rows = [swift_row(json.loads(line), data_kind) for line in source.read_text(encoding="utf-8").splitlines() if line]
            Path(swift_data_file(str(source), data_kind)).write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def with_options(argv: list[str], options: dict) -> list[str]:
    """backend_options.swift: raw `--key value` pairs, verbatim (lists become repeated values). A key unifier
    already passes is replaced, not repeated, so the printed command says each thing once."""
    flags = {f"--{key}" for key in options if key != "model_type"}  # model_type is read by _model_type()
    kept = [part for flag, values in _grouped(argv) if flag not in flags for part in (flag, *values)]
    for key, value in options.items():
        if key == "model_type":
            continue
        values = value if isinstance(value, list) else [value]
        kept += [f"--{key}", *[_flag(v) if isinstance(v, bool) else (json.dumps(v) if isinstance(v, dict) else str(v))
                               for v in values]]
    return kept


def _grouped(argv: list[str]) -> list[tuple[str, list[str]]]:
    """['--a', '1', '--b', 'x', 'y'] -> [('--a', ['1']), ('--b', ['x', 'y'])]"""
    groups: list[tuple[str, list[str]]] = []
    for part in argv:
        if part.startswith("--") or not groups:
            groups.append((part, []))
        else:
            groups[-1][1].append(part)
    return groups


def render_command(subcommand: str, argv: list[str], env: dict[str, str]) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    lines = [" ".join(shlex.quote(p) for p in [flag, *values]) for flag, values in _grouped(argv)]
    head = f"{prefix} swift {subcommand}".strip()
    return " \\\n    ".join([head, *lines]) + "\n"


def convert_logging(source: Path, target: Path) -> None:
    """ms-swift's logging.jsonl -> unifier's metrics.jsonl."""
    from unifier.metrics import metrics_record

    records = []
    if source.is_file():
        for line in source.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "loss" not in row and "eval_loss" not in row:
                continue
            step = int(str(row.get("global_step/max_steps", "0/0")).split("/")[0])
            records.append(metrics_record(
                step=step, epoch=row.get("epoch"), loss=row.get("loss"), learning_rate=row.get("learning_rate"),
                grad_norm=row.get("grad_norm"), tokens_seen=row.get("num_input_tokens_seen"),
                step_time=row.get("train_speed(s/it)") if "loss" in row else None,
                eval_loss=row.get("eval_loss"), extra={k: v for k, v in row.items() if k.startswith("rewards/")}))
    target.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def last_checkpoint(native: Path) -> Path:
    checkpoints = sorted(native.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    if not checkpoints:
        raise RuntimeError(f"ms-swift wrote no checkpoint under {native}")
    return checkpoints[-1]


def copy_outputs(checkpoint: Path, spec: JobSpec, run_dir: Path) -> None:
    """The final checkpoint becomes adapter/ (or model/), with the tokenizer ms-swift does not save."""
    target = run_dir / ("model" if spec.adapter.type == "full" else "adapter")
    shutil.copytree(checkpoint, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pt", "rng_state*", "global_step*"))
    model_dir = Path(resolve_model_ref(spec.model.name_or_path))
    if model_dir.is_dir():
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file() and not (target / name).exists():
                shutil.copy2(model_dir / name, target / name)
    template = hf_args.chat_template_file(spec)
    if template:
        shutil.copy2(template, target / "chat_template.jinja")


def wants_merge(spec: JobSpec) -> bool:
    return spec.output.save in ("merged", "both") and spec.adapter.type != "full"


def merge_outputs(spec: JobSpec, run_dir: Path) -> str:
    """output.save merged/both: the same merge as the peft and unsloth backends (into the base in model.dtype;
    `swift export --merge_lora` would re-quantize a QLoRA merge, which the other backends do not)."""
    from .trl_steps import merge_adapter

    target = run_dir / "merged"
    merge_adapter({"model": resolve_model_ref(spec.model.name_or_path), "revision": spec.model.revision,
                   "trust_remote_code": spec.model.trust_remote_code, "dtype": spec.model.dtype,
                   "adapter_dir": str(run_dir / "adapter"), "merged_dir": str(target)})
    for name in (*TOKENIZER_FILES, "chat_template.jinja"):
        if (run_dir / "adapter" / name).is_file():
            shutil.copy2(run_dir / "adapter" / name, target / name)
    return str(target)


def verify_ranks(native: Path, spec: JobSpec) -> dict:
    """Prove the ranks trained one model together: every rank reports the same trainable-weight digest."""
    records = [json.loads(p.read_text()) for p in sorted((native / "unifier_ranks").glob("rank*.json"))]
    expected = spec.compute.nproc_per_node if spec.compute.nnodes == 1 else None
    problems = []
    if expected and len(records) != expected:
        problems.append(f"{len(records)} of {expected} ranks reported")
    if any(not r["distributed_initialized"] or r["world_size"] != spec.compute.world_size for r in records):
        problems.append("a rank trained without torch.distributed at the full world size")
    if len({r["trainable_digest"] for r in records}) > 1:
        problems.append("the ranks ended with different weights (independent copies, not data-parallel training)")
    if problems:
        raise RuntimeError("multi-process ms-swift run was not data-parallel: " + "; ".join(problems))
    return {"ranks": len(records), "world_size": spec.compute.world_size, "identical_weights": True,
            "process_group_backend": records[0]["backend"] if records else None}


BACKEND = SwiftBackend()
