"""`unify import FILE --from llamafactory|axolotl`: another tool's training YAML -> a unifier recipe.

A pure translation of the keys people set (model, LoRA/QLoRA, datasets in their formats, hyperparameters,
DeepSpeed config), with each value's meaning in the other tool, its defaults included (LLaMA-Factory's
lora_alpha = 2 x rank and gradient checkpointing on; axolotl's micro_batch_size is per GPU). Every key that is
not translated is listed with the reason; a key set to nothing (axolotl's `wandb_project:`) means unset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

TOOLS = ("llamafactory", "axolotl")
# LLaMA-Factory templates that re-create a model family's official chat template
LLAMAFACTORY_FAMILY_TEMPLATES = {
    *("qwen", "qwen2_vl", "qwen3", "qwen3_nothink", "qwen3_vl", "llama2", "llama3", "llama4", "mllama"),
    *("mistral", "ministral", "mistral_small", "gemma", "gemma2", "gemma3", "gemma3n", "phi", "phi_small"),
    *("phi4", "phi4_mini", "deepseek", "deepseek3", "deepseekr1", "deepseekcoder", "glm4", "chatglm3", "yi"),
    *(
        "baichuan2",
        "cohere",
        "granite3",
        "olmo",
        "falcon",
        "intern2",
        "intern3",
        "minicpm",
        "hunyuan",
        "gpt_oss",
    ),
    *(
        "seed_oss",
        "kimi_vl",
        "exaone",
        "zephyr",
        "smollm",
        "smollm2",
        "openchat3.6",
        "starcoder2",
        "telechat2",
    ),
}
# axolotl dataset keys unifier translates (the others are listed as not translated)
AXOLOTL_DATASET_KEYS = {
    *("path", "data_files", "split", "name", "type", "field_messages", "message_property_mappings"),
    *(
        "message_field_role",
        "message_field_content",
        "roles",
        "field",
        "field_chosen",
        "field_rejected",
        "ds_type",
    ),
}
# what the other tool trains with when its config leaves a key out (written into the recipe explicitly)
TOOL_DEFAULTS = {
    # LLaMA-Factory passes these to transformers' TrainingArguments, whose defaults they are
    "llamafactory": {
        "learning_rate": 5e-5,
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "seed": 42,
        "logging_steps": 500,
        "save_steps": 500,
    },
    # axolotl's config schema
    "axolotl": {
        "num_epochs": 1,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "lr_scheduler": "cosine",
    },
}
OPTIMIZERS = {
    "adamw_torch": "adamw_torch",
    "adamw_torch_fused": "adamw_torch",
    "adamw_hf": "adamw_torch",
    "adamw_8bit": "adamw_8bit",
    "adamw_bnb_8bit": "adamw_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "sgd": "sgd",
}
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
TRACKERS = ("tensorboard", "wandb", "mlflow", "swanlab", "trackio")
# keys that only steer the other tool's own run (caches, workers, its plots): nothing to translate
RUNTIME_ONLY = {
    "llamafactory": {
        "do_train",
        "overwrite_cache",
        "preprocessing_num_workers",
        "dataloader_num_workers",
        "overwrite_output_dir",
        "plot_loss",
        "ddp_timeout",
        "resume_from_checkpoint",
        "save_only_model",
        "per_device_eval_batch_size",
        "eval_strategy",
        "dataset_dir",
    },
    "axolotl": {
        "strict",
        "dataset_prepared_path",
        "eval_sample_packing",
        "pad_to_sequence_len",
        "lora_model_dir",
        "resume_from_checkpoint",
        "wandb_entity",
        "wandb_watch",
        "wandb_name",
        "wandb_log_model",
        "wandb_mode",
        "tf32",
        "flash_attention",
        "sdp_attention",
        "xformers_attention",
        "model_type",
        "tokenizer_type",
        "hub_model_id",
        "eval_batch_size",
    },
}


@dataclass
class Imported:
    recipe: dict[str, Any]
    untranslated: list[str] = field(default_factory=list)  # "key: why"
    notes: list[str] = field(default_factory=list)  # translated, with a difference worth knowing

    def text(self, source: str, tool: str) -> str:
        lines = [f"# imported by `unify import` from {source} ({tool}); check it with `unify validate`"]
        if self.notes:
            lines += ["# notes:"] + [f"#   - {note}" for note in self.notes]
        if self.untranslated:
            lines += ["# not translated:"] + [f"#   - {item}" for item in self.untranslated]
        body = yaml.safe_dump(self.recipe, sort_keys=False, allow_unicode=True)
        return "\n".join(lines) + "\n" + body


def import_file(path: Path, tool: str) -> Imported:
    if tool not in TOOLS:
        raise UserError(f"--from '{tool}': expected one of {', '.join(TOOLS)}")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not a readable YAML file ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of training settings at the top level")
    config = {key: value for key, value in raw.items() if value is not None}
    if Path(path).is_dir():
        raise UserError(f"{path}: a folder, not a config file")
    translator = Translator(config, tool, Path(path).parent)
    translator.recipe["name"] = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "imported"
    try:
        (translate_llamafactory if tool == "llamafactory" else translate_axolotl)(translator)
    except (
        TypeError,
        AttributeError,
        ValueError,
        KeyError,
    ) as exc:  # a value of a shape the tool never writes
        raise UserError(
            f"{path}: a value has a shape {tool} does not use ({type(exc).__name__}: {exc})",
            hint=f"check the file against {tool}'s documented example configs",
        ) from None
    return translator.result()


class Translator:
    """The foreign config, the recipe being built, and which keys were read."""

    def __init__(self, config: dict[str, Any], tool: str, base_dir: Path):
        self.config, self.tool, self.base_dir = config, tool, base_dir
        self.used: set[str] = set()
        self.recipe: dict[str, Any] = {"name": "imported"}
        self.untranslated: list[str] = []
        self.notes: list[str] = []
        self.defaulted: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.config:
            self.used.add(key)
            return self.config[key]
        return default

    def number(self, key: str, kind=float) -> Any:
        """A number (PyYAML reads `2e-5` as a string); None when unset."""
        value = self.get(key)
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if kind is int and number != int(number):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            expected = "a whole number" if kind is int else "a number"
            raise UserError(f"{self.tool} config: {key}: expected {expected}, got {value!r}") from None
        return int(number) if kind is int else number

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{self.tool} config: {key}: expected text, got {value!r}")
        return value

    def flag(self, key: str, default: bool | None = None) -> bool | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise UserError(f"{self.tool} config: {key}: expected true or false, got {value!r}")
        return value

    def names(self, key: str) -> list[str]:
        """A comma-separated string or a list of strings."""
        value = self.get(key)
        if value is None:
            return []
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return split_names(value)
        raise UserError(f"{self.tool} config: {key}: expected a name or a list of names, got {value!r}")

    def put(self, dotted: str, value: Any) -> None:
        if value is None:
            return
        node = self.recipe
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def skip(self, key: str, why: str) -> None:
        self.used.add(key)
        self.untranslated.append(f"{key}: {why}")

    def result(self) -> Imported:
        runtime = RUNTIME_ONLY[self.tool]
        for key in self.config:
            if key not in self.used and key not in runtime:
                self.untranslated.append(f"{key}: no unifier equivalent")
        if self.defaulted:
            self.notes.append(
                f"not set in the config, {self.tool}'s defaults written: {', '.join(self.defaulted)}"
            )
        ignored = sorted(k for k in self.config if k in runtime and k not in self.used)
        if ignored:
            self.notes.append(f"ignored (settings of {self.tool}'s own run): {', '.join(ignored)}")
        self.recipe.setdefault("output", {})["if_exists"] = "error"
        order = ("name", "model", "adapter", "quantization", "data", "training", "compute", "output")
        recipe = {key: self.recipe[key] for key in order if key in self.recipe}
        return Imported(recipe=recipe, untranslated=self.untranslated, notes=self.notes)

    def with_tool_default(self, key: str) -> None:
        """A key the config leaves out takes the other tool's default (noted), not unifier's."""
        defaults = TOOL_DEFAULTS[self.tool]
        if key not in self.config and key in defaults:
            self.config[key] = defaults[key]
            self.defaulted.append(f"{key}={defaults[key]}")

    # ---- shared by both tools ----
    def hyperparameters(
        self, epochs_key: str, batch_key: str, scheduler_key: str, optimizer_key: str
    ) -> None:
        for key, target, kind in (
            ("learning_rate", "training.learning_rate", float),
            (epochs_key, "training.epochs", float),
            ("max_steps", "training.max_steps", int),
            (batch_key, "training.per_device_batch_size", int),
            ("gradient_accumulation_steps", "training.gradient_accumulation_steps", int),
            ("warmup_ratio", "training.warmup_ratio", float),
            ("warmup_steps", "training.warmup_steps", int),
            ("weight_decay", "training.weight_decay", float),
            ("max_grad_norm", "training.max_grad_norm", float),
            ("adam_beta1", "training.adam_beta1", float),
            ("adam_beta2", "training.adam_beta2", float),
            ("adam_epsilon", "training.adam_epsilon", float),
            ("seed", "training.seed", int),
            ("logging_steps", "training.logging_steps", int),
            ("save_steps", "training.save_steps", int),
            ("save_total_limit", "training.save_total_limit", int),
            ("eval_steps", "training.eval_steps", int),
        ):
            self.with_tool_default(key)
            value = self.number(key, kind)
            if key == "max_steps" and value is not None and value <= 0:
                continue
            self.put(target, value)
        self.with_tool_default(scheduler_key)
        scheduler = self.get(scheduler_key)
        if scheduler is not None:
            if scheduler in SCHEDULERS:
                self.put("training.lr_scheduler", scheduler)
                ratio = self.number("cosine_min_lr_ratio", float)  # axolotl's floor of its cosine schedule
                if ratio is not None and scheduler == "cosine":
                    self.put("training.min_lr_ratio", ratio)
                elif ratio is not None:
                    self.skip("cosine_min_lr_ratio", f"applies to a cosine schedule, not {scheduler}")
            elif scheduler == "cosine_with_min_lr":
                self.put("training.lr_scheduler", "cosine")
                self.min_lr_ratio(scheduler_key)
            else:
                self.skip(
                    scheduler_key,
                    f"'{scheduler}' is not one of unifier's schedulers ({', '.join(SCHEDULERS)})",
                )
        optimizer = self.get(optimizer_key)
        if optimizer is not None:
            if optimizer in OPTIMIZERS:
                self.put("training.optimizer", OPTIMIZERS[optimizer])
            else:
                self.skip(optimizer_key, f"'{optimizer}' is not one of unifier's optimizers")

    def min_lr_ratio(self, scheduler_key: str) -> None:
        """transformers' cosine_with_min_lr: its lr_scheduler_kwargs give min_lr_rate, or min_lr (absolute)."""
        kwargs = self.get("lr_scheduler_kwargs")
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs)
            except ValueError:
                kwargs = None
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        rate, floor = kwargs.get("min_lr_rate"), kwargs.get("min_lr")
        learning_rate = self.recipe.get("training", {}).get("learning_rate")
        if isinstance(rate, (int, float)):
            self.put("training.min_lr_ratio", float(rate))
        elif isinstance(floor, (int, float)) and isinstance(learning_rate, (int, float)) and learning_rate:
            self.put("training.min_lr_ratio", float(floor) / learning_rate)
            self.notes.append(
                f"lr_scheduler_kwargs min_lr {floor}: training.min_lr_ratio {floor / learning_rate:g}"
            )
        else:
            raise UserError(
                f"{self.tool} config: {scheduler_key} cosine_with_min_lr needs lr_scheduler_kwargs with min_lr_rate "
                "or min_lr (transformers refuses it without)",
                hint="add lr_scheduler_kwargs: {min_lr_rate: 0.1} to the config, or use cosine",
            )

    def precision(self) -> None:
        bf16, fp16 = self.get("bf16"), self.get("fp16")
        for key, value in (("bf16", bf16), ("fp16", fp16)):
            if value not in (None, True, False, "auto"):
                raise UserError(f"{self.tool} config: {key}: expected true, false or auto, got {value!r}")
        if bf16 in (True, "auto"):
            self.put("model.dtype", "bfloat16")
        elif fp16 in (True, "auto"):
            self.put("model.dtype", "float16")
        else:
            self.put("model.dtype", "float32")

    def deepspeed(self) -> None:
        value = self.get("deepspeed")
        if value is None:
            return
        if not isinstance(value, (str, dict)):
            raise UserError(
                f"{self.tool} config: deepspeed: expected a JSON file's path or a mapping, got {value!r}"
            )
        strategy, how = deepspeed_strategy(value, self.base_dir)
        self.put("compute.strategy", strategy)
        self.notes.append(
            f"deepspeed {value}: compute.strategy {strategy} ({how}); set compute.nproc_per_node"
        )

    def tracking(self, report_to: Any) -> None:
        names = report_to if isinstance(report_to, list) else [report_to] if report_to else []
        if not all(isinstance(name, str) for name in names):
            raise UserError(f"{self.tool} config: report_to: expected tracker names, got {report_to!r}")
        kept = [name for name in names if name in TRACKERS]
        dropped = [name for name in names if name not in TRACKERS and name not in ("none", "all")]
        if kept:
            self.put("output.report_to", kept)
        if dropped:
            self.untranslated.append(f"report_to {', '.join(dropped)}: not a tracker unifier configures")


def deepspeed_strategy(value: Any, base_dir: Path) -> tuple[str, str]:
    """A DeepSpeed config (file or inline mapping) -> zero2/zero3(_offload), from its stage and offload."""
    config: dict | None = value if isinstance(value, dict) else None
    if config is None:
        path = Path(str(value))
        path = path if path.is_absolute() else base_dir / path
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"{path}: not a readable DeepSpeed JSON config ({exc})") from None
    if config is not None:
        zero = config.get("zero_optimization", {}) if isinstance(config, dict) else None
        raw_stage = zero.get("stage", 0) if isinstance(zero, dict) else None
        stage = 2 if raw_stage == "auto" else raw_stage
        if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
            raise UserError(
                f"deepspeed {value}: expected zero_optimization.stage 0-3 in the DeepSpeed config"
            )
        offload = any(
            isinstance(zero.get(key), dict) and zero[key].get("device") in ("cpu", "nvme")
            for key in ("offload_optimizer", "offload_param")
        )
        how = "read from the config" + ("; stage auto read as 2" if raw_stage == "auto" else "")
    else:
        name = str(value).lower()
        stage = 3 if re.search(r"z(ero)?_?3", name) else 2 if re.search(r"z(ero)?_?2", name) else 0
        offload = "offload" in name
        how = "from the file name; the file is not here"
    if stage < 2:
        return "ddp", f"ZeRO stage {stage} shards nothing unifier distinguishes; {how}"
    return f"zero{stage}{'_offload' if offload else ''}", how


# ---- LLaMA-Factory ----
def translate_llamafactory(t: Translator) -> None:
    t.put("model.name_or_path", t.text("model_name_or_path"))
    t.put("model.trust_remote_code", t.flag("trust_remote_code"))
    template = t.text("template")
    if template is not None:
        # LLaMA-Factory's family templates re-create the official ones (qwen3 with its think blocks, llama3
        # with its headers), which unifier trains as the model's own; `chatml` is ChatML on any model; its other
        # templates (alpaca, vicuna, default...) are prompt formats of its own, with no unifier equivalent
        if template == "chatml":
            t.put("model.chat_template", "chatml")
        elif template in LLAMAFACTORY_FAMILY_TEMPLATES:
            t.put("model.chat_template", "tokenizer")
            t.notes.append(f"template {template}: the model's own chat template (from its tokenizer) is used")
        else:
            t.skip(
                "template",
                f"'{template}' is LLaMA-Factory's own prompt format, not a model's chat template: write it as a "
                "Jinja file and set model.chat_template to its path (the recipe keeps chat_template: auto)",
            )
    t.put("model.max_seq_length", t.number("cutoff_len", int))
    train_on_prompt = t.flag("train_on_prompt")  # LLaMA-Factory: loss on the prompts too
    if train_on_prompt is not None:
        t.put("data.assistant_only_loss", not train_on_prompt)

    stage = t.text("stage", "sft")
    if stage not in ("sft", "dpo", "pt", "rm", "kto"):
        raise UserError(
            f"stage '{stage}': unifier imports sft, pt (as sft on text), rm (reward), kto and dpo (pref_loss "
            f"sigmoid / ipo / hinge, orpo or simpo); there is no {stage} import yet"
        )
    t.put("training.method", {"dpo": "dpo", "rm": "reward", "kto": "kto"}.get(stage, "sft"))
    kind = t.text("finetuning_type", "lora")
    bits = t.number("quantization_bit", int)
    method = t.get("quantization_method", "bnb")
    if bits is not None and method not in ("bnb", "bitsandbytes"):
        raise UserError(f"quantization_method '{method}': unifier quantizes with bitsandbytes only")
    if kind == "full":
        t.put("adapter.type", "full")
    elif kind == "lora":
        rank = default(t.number("lora_rank", int), 8)
        t.put("adapter.type", "qlora" if bits else "lora")
        t.put("adapter.r", rank)
        t.put("adapter.alpha", default(t.number("lora_alpha", int), 2 * rank))  # LLaMA-Factory: 2 x rank
        t.put("adapter.dropout", default(t.number("lora_dropout"), 0.0))
        target = t.names("lora_target") or ["all"]
        t.put("adapter.target_modules", "all-linear" if target == ["all"] else target)
        t.put("adapter.use_dora", t.flag("use_dora"))
        t.put("adapter.use_rslora", t.flag("use_rslora"))
        t.put("adapter.modules_to_save", t.names("additional_target") or None)
    else:
        raise UserError(
            f"finetuning_type '{kind}': unifier trains lora (qlora with quantization_bit) or full"
        )
    if bits:
        t.put("quantization.bits", bits)
        t.put("quantization.quant_type", t.text("quantization_type"))
        t.put("quantization.double_quant", t.flag("double_quantization"))
    if stage == "dpo":
        llamafactory_preference_method(t)
    elif (
        stage == "kto"
    ):  # LLaMA-Factory's defaults: pref_beta 0.1, kto_chosen_weight / kto_rejected_weight 1.0
        t.put("training.kto.beta", default(t.number("pref_beta"), 0.1))
        t.put("training.kto.desirable_weight", default(t.number("kto_chosen_weight"), 1.0))
        t.put("training.kto.undesirable_weight", default(t.number("kto_rejected_weight"), 1.0))

    dataset_dir = t.base_dir / t.text("dataset_dir", "data")
    names = t.names("dataset")
    if not names:
        raise UserError("dataset: the config names no dataset")
    limit = t.number("max_samples", int)
    t.put("data.train", [llamafactory_source(t, name, dataset_dir, stage, limit) for name in names])
    eval_names = t.names("eval_dataset")
    if eval_names:
        t.put("data.eval", [llamafactory_source(t, name, dataset_dir, stage, None) for name in eval_names])
    val_size = t.number("val_size")
    if val_size:
        if val_size < 1:
            t.put("data.eval_split", val_size)
        else:
            t.skip("val_size", f"{val_size:g} rows: unifier's data.eval_split is a fraction")
    packing = t.flag("packing") or t.flag("neat_packing")
    t.put("data.packing", bool(packing) if packing is not None else (stage == "pt" or None))

    t.hyperparameters("num_train_epochs", "per_device_train_batch_size", "lr_scheduler_type", "optim")
    if "optim" not in t.config:
        t.put("training.optimizer", "adamw_torch")
    t.put("training.gradient_checkpointing", not t.flag("disable_gradient_checkpointing", False))
    t.precision()
    t.deepspeed()
    t.tracking(t.get("report_to"))
    t.put("output.dir", t.text("output_dir"))


def llamafactory_preference_method(t: Translator) -> None:
    """LLaMA-Factory's stage dpo trains DPO, ORPO or SimPO by pref_loss (with its own defaults: pref_beta 0.1,
    simpo_gamma 0.5)."""
    beta = default(t.number("pref_beta"), 0.1)
    loss = t.text("pref_loss", "sigmoid")
    if loss == "orpo":
        t.put("training.method", "orpo")
        t.put("training.orpo.beta", beta)
    elif loss == "simpo":
        t.put("training.method", "simpo")
        t.put("training.simpo.beta", beta)
        t.put("training.simpo.gamma", default(t.number("simpo_gamma"), 0.5))
    elif loss in ("sigmoid", "ipo", "hinge"):
        t.put("training.dpo.beta", beta)
        t.put("training.dpo.loss_type", loss)
    else:
        t.put("training.dpo.beta", beta)
        t.skip(
            "pref_loss",
            f"'{loss}' is not a preference loss unifier trains (sigmoid, ipo, hinge, orpo, simpo)",
        )
    if t.number("pref_ftx"):
        # LLaMA-Factory adds pref_ftx x the chosen answer's mean log-likelihood; unifier's SimPO nll_weight is
        # the same term as trl's token-mean cross-entropy, DPO has none
        t.skip(
            "pref_ftx",
            "an SFT term in the preference loss is not translated (SimPO: see training.simpo.nll_weight)",
        )


def llamafactory_source(t: Translator, name: str, dataset_dir: Path, stage: str, limit: int | None) -> dict:
    """A dataset name -> a data source, through <dataset_dir>/dataset_info.json when it is here."""
    info_file = dataset_dir / "dataset_info.json"
    info: dict = {}
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{info_file}: not readable JSON ({exc})") from None
    entry = info.get(name)
    source: dict[str, Any] = {}
    if entry is None:
        source["path"] = name
        t.untranslated.append(
            f"dataset {name}: not in {info_file} (kept as a hub name); point data.train's path at the file"
        )
        source["format"] = (
            "preference"
            if stage in ("dpo", "rm")
            else "text"
            if stage == "pt"
            else "unpaired"
            if stage == "kto"
            else "auto"
        )
    else:
        if "file_name" in entry:
            source["path"] = str((dataset_dir / entry["file_name"]).resolve())
        else:
            source["path"] = entry.get("hf_hub_url") or entry.get("ms_hub_url") or name
        source.update(llamafactory_format(entry, stage))
    if limit:
        source["max_rows"] = limit
    return source


def llamafactory_format(entry: dict, stage: str) -> dict[str, Any]:
    """dataset_info.json's formatting, columns and tags -> format, columns and roles."""
    formatting = entry.get("formatting", "alpaca")
    columns = dict(entry.get("columns") or {})
    tags = dict(entry.get("tags") or {})
    if stage == "kto":  # a conversation ending with the judged answer + its kto_tag column
        if formatting != "sharegpt":
            raise UserError(
                "stage kto: the dataset's alpaca layout is not imported (unifier reads KTO answers as "
                "prompt/completion/label or a conversation + label)",
                hint="convert the rows to the sharegpt layout, or write the data source by hand",
            )
        source = llamafactory_format(entry, "sft")
        source["format"] = "unpaired"
        label = columns.get("kto_tag", "label")
        if label != "label":
            source["columns"] = {**source.get("columns", {}), "label": label}
        return source
    if entry.get("ranking") or stage in ("dpo", "rm"):
        mapped = {
            ours: columns[theirs]
            for theirs, ours in (
                ("messages", "conversations"),
                ("prompt", "prompt"),
                ("chosen", "chosen"),
                ("rejected", "rejected"),
            )
            if theirs in columns and columns[theirs] != ours
        }
        return {"format": "preference", **({"columns": mapped} if mapped else {})}
    if stage == "pt":
        text = columns.get("prompt", "text")
        return {"format": "text", **({"columns": {"text": text}} if text != "text" else {})}
    if formatting == "sharegpt":
        if tags.get("role_tag") == "role" and tags.get("content_tag") == "content":
            messages = columns.get("messages", "messages")
            return {
                "format": "messages",
                **({"columns": {"messages": messages}} if messages != "messages" else {}),
            }
        roles = {
            tags[key]: role
            for key, role in (
                ("user_tag", "user"),
                ("assistant_tag", "assistant"),
                ("system_tag", "system"),
                ("observation_tag", "tool"),
                ("function_tag", "assistant"),
            )
            if key in tags
        }
        messages = columns.get("messages", "conversations")
        source: dict[str, Any] = {"format": "sharegpt"}
        if messages != "conversations":
            source["columns"] = {"conversations": messages}
        if roles:
            source["roles"] = roles
        return source
    mapped = {
        ours: columns[theirs]
        for theirs, ours in (
            ("prompt", "instruction"),
            ("query", "input"),
            ("response", "output"),
            ("system", "system"),
            ("history", "history"),
        )
        if theirs in columns and columns[theirs] != ours
    }
    return {"format": "alpaca", **({"columns": mapped} if mapped else {})}


# ---- axolotl ----
def translate_axolotl(t: Translator) -> None:
    t.put("model.name_or_path", t.text("base_model"))
    t.put("model.trust_remote_code", t.flag("trust_remote_code"))
    t.put("model.max_seq_length", t.number("sequence_len", int))
    template = t.text("chat_template")
    if template == "jinja":
        t.skip(
            "chat_template",
            "jinja: write chat_template_jinja to a .jinja file and set model.chat_template to its path",
        )
        t.skip("chat_template_jinja", "see chat_template")
    elif template is not None:
        chosen = {"chatml": "chatml", "tokenizer_default_fallback_chatml": "auto"}.get(template, "tokenizer")
        t.put("model.chat_template", chosen)
        if template not in ("chatml", "tokenizer_default", "tokenizer_default_fallback_chatml"):
            t.notes.append(f"chat_template {template}: the tokenizer's own chat template is used")

    rl = t.text("rl")
    if rl not in (None, "dpo", "orpo", "simpo"):
        raise UserError(f"rl '{rl}': unifier imports sft (no rl), dpo, orpo and simpo from axolotl")
    reward_model = t.flag("reward_model")  # axolotl's reward-model training (Bradley-Terry on pairs)
    if reward_model and rl:
        raise UserError(f"reward_model: true with rl '{rl}': axolotl trains one of them; drop one")
    t.put("training.method", "reward" if reward_model else rl or "sft")
    adapter = t.text("adapter")
    four, eight = t.flag("load_in_4bit"), t.flag("load_in_8bit")
    bits = 4 if four else 8 if eight else None
    if adapter in ("lora", "qlora"):
        t.put("adapter.type", "qlora" if bits or adapter == "qlora" else "lora")
        t.put("adapter.r", t.number("lora_r", int))
        t.put("adapter.alpha", t.number("lora_alpha", int))
        t.put("adapter.dropout", t.number("lora_dropout"))
        modules = t.names("lora_target_modules")
        if t.flag("lora_target_linear") or not modules:
            t.put("adapter.target_modules", "all-linear")
        else:
            t.put("adapter.target_modules", modules)
        t.put("adapter.modules_to_save", t.names("lora_modules_to_save") or None)
        t.put("adapter.use_dora", t.flag("peft_use_dora"))
        t.put("adapter.use_rslora", t.flag("peft_use_rslora"))
        t.put("quantization.bits", bits or (4 if adapter == "qlora" else None))
    elif adapter is None:
        if bits:
            raise UserError(
                "load_in_4bit/load_in_8bit without an adapter: full fine-tuning cannot train quantized weights"
            )
        t.put("adapter.type", "full")
    else:
        raise UserError(f"adapter '{adapter}': unifier trains lora, qlora or (no adapter) full fine-tuning")
    if rl == "dpo":
        beta = t.number("rl_beta") or t.number("dpo_beta")
        t.put("training.dpo.beta", beta if beta is not None else 0.1)
    elif rl == "orpo":  # axolotl passes orpo_alpha as trl's ORPO beta
        t.put("training.orpo.beta", default(t.number("orpo_alpha"), 0.1))
    elif (
        rl == "simpo"
    ):  # axolotl runs trl's CPO with loss_type simpo: trl's defaults where the config is silent
        t.put("training.simpo.beta", default(t.number("rl_beta"), 0.1))
        t.put("training.simpo.gamma", default(t.number("simpo_gamma"), 0.5))
        t.put("training.simpo.nll_weight", default(t.number("cpo_alpha"), 1.0))

    datasets = t.get("datasets") or []
    if not isinstance(datasets, list):
        raise UserError(f"axolotl config: datasets: expected a list of datasets, got {datasets!r}")
    if not datasets:
        raise UserError("datasets: the config lists no dataset")
    pair_kind = "reward" if reward_model else rl
    t.put("data.train", [axolotl_source(t, item, pair_kind) for item in datasets])
    tests = t.get("test_datasets")
    if tests and not isinstance(tests, list):
        raise UserError(f"axolotl config: test_datasets: expected a list of datasets, got {tests!r}")
    if tests:
        t.put("data.eval", [axolotl_source(t, item, pair_kind) for item in tests])
    val = t.number("val_set_size")
    if val and val < 1:
        t.put("data.eval_split", val)
    elif val:
        t.skip("val_set_size", f"{val:g} rows: unifier's data.eval_split is a fraction")
    t.put("data.packing", t.flag("sample_packing"))
    train_on_inputs = t.flag("train_on_inputs")
    if train_on_inputs is not None:
        t.put("data.assistant_only_loss", not train_on_inputs)

    t.hyperparameters("num_epochs", "micro_batch_size", "lr_scheduler", "optimizer")
    checkpointing = t.get("gradient_checkpointing")
    if checkpointing not in (None, True, False, "offload"):
        raise UserError(
            f"axolotl config: gradient_checkpointing: expected true, false or offload, got {checkpointing!r}"
        )
    if checkpointing is not None:
        t.put("training.gradient_checkpointing", bool(checkpointing))
        if checkpointing == "offload":
            t.notes.append(
                "gradient_checkpointing offload: plain gradient checkpointing (no activation offload)"
            )
    for key in ("evals_per_epoch", "saves_per_epoch"):
        if key in t.config:
            t.skip(key, f"unifier counts in steps: set training.{key.split('s_per')[0]}_steps")
    t.precision()
    t.deepspeed()
    if t.get("fsdp") or t.get("fsdp_config"):
        t.put("compute.strategy", "fsdp2")
        t.notes.append(
            "fsdp: compute.strategy fsdp2 (ms-swift's preset; axolotl's fsdp_config options are not read)"
        )
    trackers = []
    if t.get("wandb_project"):
        trackers.append("wandb")
    if t.get("use_tensorboard"):
        trackers.append("tensorboard")
    if t.get("mlflow_tracking_uri") or t.get("mlflow_experiment_name"):
        trackers.append("mlflow")
    t.tracking(trackers)
    t.put("output.dir", t.text("output_dir"))


def axolotl_source(t: Translator, item: Any, rl: str | None) -> dict:
    if not isinstance(item, dict) or not (item.get("path") or item.get("data_files")):
        raise UserError(f"datasets: expected entries with a path (or data_files), got {item!r}")
    path = str(item.get("path", ""))
    files = item.get("data_files")
    if files:
        path = str(files[0] if isinstance(files, list) else files)
    local = Path(path) if Path(path).is_absolute() else t.base_dir / path
    source: dict[str, Any] = {"path": str(local.resolve()) if local.exists() else path}
    if item.get("split") and not local.exists():
        source["split"] = item["split"]
    if item.get("name"):
        source["subset"] = item["name"]
    kind = str(item.get("type", "alpaca"))
    for key, value in item.items():
        if key in AXOLOTL_DATASET_KEYS or value is None:
            continue
        if key == "roles_to_train" and list(value) == ["assistant"]:
            continue  # what unifier trains
        if key == "train_on_eos" and value == "turn":
            continue  # unifier trains each assistant turn's end-of-turn marker
        why = {
            "roles_to_train": "unifier trains the assistant turns (data.assistant_only_loss: false trains every "
            "token)",
            "train_on_eos": "unifier trains each assistant turn's end-of-turn marker ('turn')",
            "chat_template": "a dataset's own template: unifier renders every source with model.chat_template",
        }.get(key, "no unifier equivalent")
        t.untranslated.append(f"datasets[{path}].{key}: {why}")
    pairs = rl in ("dpo", "orpo", "simpo", "reward")
    if pairs and kind in ("chatml.intel", "llama3.intel", "chatml.argilla_chat", "llama3.argilla_chat"):
        # axolotl's fixed-column DPO strategies: intel (system, question, chosen, rejected as text) and
        # argilla_chat (chosen / rejected conversations sharing the prompt turn)
        source["format"] = "preference"
        if kind.endswith(".intel"):
            source["columns"] = {"prompt": "question"}
        t.notes.append(f"dataset {path} type {kind}: read as preference pairs with axolotl's fixed columns")
        return source
    if pairs:
        mapped = {
            ours: item[theirs]
            for theirs, ours in (
                ("field_messages", "prompt"),
                ("field_chosen", "chosen"),
                ("field_rejected", "rejected"),
            )
            if item.get(theirs) and item[theirs] != ours
        }
        source["format"] = "preference"
        if mapped:
            source["columns"] = mapped
        if not kind.startswith("chat_template"):
            t.notes.append(
                f"dataset {path} type {kind}: read as preference pairs (prompt/chosen/rejected); check the columns"
            )
        return source
    if kind == "alpaca":
        source["format"] = "alpaca"
    elif kind in ("completion", "pretrain"):
        source["format"] = "text"
        if item.get("field") and item["field"] != "text":
            source["columns"] = {"text": item["field"]}
    elif kind in ("chat_template", "sharegpt"):
        mappings = item.get("message_property_mappings") or {}
        field_messages = item.get("field_messages", "conversations" if kind == "sharegpt" else "messages")
        # the message keys: message_property_mappings, or the older message_field_role / message_field_content
        role = (
            mappings.get("role")
            or item.get("message_field_role")
            or ("from" if kind == "sharegpt" else "role")
        )
        content = (
            mappings.get("content")
            or item.get("message_field_content")
            or ("value" if kind == "sharegpt" else "content")
        )
        if (role, content) not in (("role", "content"), ("from", "value")):
            raise UserError(
                f"datasets[{path}]: messages keyed {role!r} / {content!r}: unifier reads messages with role / "
                "content (OpenAI messages) or from / value (sharegpt)",
                hint="rename the keys in the data file, or point the importer at data in one of those layouts",
            )
        sharegpt = role == "from"
        source["format"] = "sharegpt" if sharegpt else "messages"
        column = "conversations" if sharegpt else "messages"
        if field_messages != column:
            source["columns"] = {column: field_messages}
        if item.get("roles"):
            source["roles"] = {name: role for role, names in item["roles"].items() for name in names}
    else:
        source["format"] = "auto"
        t.untranslated.append(
            f"datasets[{path}].type {kind}: an axolotl prompt strategy; the format is detected"
        )
    return source


def default(value: Any, fallback: Any) -> Any:
    """The other tool's default for an unset value (0 is a value, not unset)."""
    return fallback if value is None else value


def split_names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]
