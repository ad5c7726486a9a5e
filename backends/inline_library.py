# The library every printed Python training program shares (data loading, trainer, saving, merging).
# `unify plan` inlines this file verbatim into the printed scripts, so they run without unifier; the
# swift backend's after-training merge calls merge_adapter from here too.


def expand_references(value, environ=None):
    """`${NAME}` -> the environment variable's value. Recipes refer to secrets this way; only the training
    process expands them, right before the library call, so no file or printed plan holds the value."""
    import os
    import re

    environ = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {key: expand_references(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_references(item, environ) for item in value]
    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value) if isinstance(value, str) else None
    if match is None:
        return value
    if match.group(1) not in environ:
        raise KeyError(
            f"environment variable {match.group(1)} is not set (the recipe refers to it as {value})"
        )
    return environ[match.group(1)]


def load_data(config):
    """unifier's encoded rows (data/*.tokens.jsonl, written by unify run / prepare): input_ids and assistant_masks
    (1 where a token carries loss), or prompt_ids / chosen_ids / rejected_ids. trl trains them as they are."""
    from datasets import Features, Sequence, Value, load_dataset

    paths = config["paths"]
    files = {"train": paths["train_file"]}
    if config["eval"]:
        files["eval"] = paths["eval_file"]
    if config["data_kind"] == "prompt":
        return tuple(prompt_rows(files[split]) if split in files else None for split in ("train", "eval"))
    columns = {
        "preference": ("prompt_ids", "chosen_ids", "rejected_ids"),
        "unpaired": ("prompt_ids", "completion_ids", "kl_completion_ids"),
    }.get(config["data_kind"], ("input_ids", "assistant_masks"))
    features = Features({name: Sequence(Value("int32")) for name in columns})
    if config["data_kind"] == "unpaired":
        features["label"] = Value("bool")
    data = load_dataset("json", data_files=files, features=features)
    if config["method"] == "reward":  # trl's RewardTrainer scores whole sequences: prompt + answer
        data = data.map(
            lambda row: {
                "chosen_ids": row["prompt_ids"] + row["chosen_ids"],
                "rejected_ids": row["prompt_ids"] + row["rejected_ids"],
            },
            remove_columns=["prompt_ids"],
        )
    return data["train"], data.get("eval")


def prompt_rows(path):
    """GRPO prompts: the messages (for the reward functions), unifier's prompt tokens (what the model generates
    from) and the row's other columns by name (what the reward functions compare with)."""
    import json

    from datasets import Dataset

    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    # the columns as one JSON text per row: Arrow would unify their types across rows (2 -> 2.0, "yes" beside 4
    # fails) and drop a column the first row lacks; the rewards get each row's own values
    return Dataset.from_list(
        [
            {
                "prompt": row["prompt"],
                "prompt_ids": row["prompt_ids"],
                "unifier_columns": json.dumps(row["columns"]),
            }
            for row in rows
        ]
    )


def reward_columns(encoded):
    """The rows' columns, one list per name (None where a row lacks it), from their JSON texts."""
    import json

    rows = [json.loads(text) for text in encoded]
    names = sorted({name for row in rows for name in row})
    return {name: [row.get(name) for row in rows] for name in names}


def final_answer(text):
    """A completion's final answer: its last <answer>...</answer> block, else its last \\boxed{...}, else its last
    number, else its last non-empty line."""
    import re

    for pattern in (r"<answer>(.*?)</answer>", r"\\boxed\{([^{}]*)\}", r"-?\d+(?:[.,]\d+)?"):
        found = re.findall(pattern, text, re.S)
        if found:
            return found[-1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _normal_answer(value):
    return str(value).strip().rstrip(".").strip().lower()


def reward_exact_answer(prompts, completions, lengths, columns, max_completion_length):
    if "answer" not in columns:
        raise KeyError(
            "the exact_answer reward compares with each row's 'answer' column, and the rows have none"
        )
    return [
        float(_normal_answer(final_answer(text)) == _normal_answer(answer))
        for text, answer in zip(completions, columns["answer"])
    ]


def reward_format(prompts, completions, lengths, columns, max_completion_length):
    import re

    def well_formed(text):
        return bool(
            re.match(r"\s*<think>.*?</think>\s*\S", text, re.S)
            or re.search(r"<answer>.*?</answer>", text, re.S)
        )

    return [float(well_formed(text)) for text in completions]


def reward_length(prompts, completions, lengths, columns, max_completion_length):
    return [1.0 - min(n, max_completion_length) / max_completion_length for n in lengths]


BUILTIN_REWARDS = {"exact_answer": reward_exact_answer, "format": reward_format, "length": reward_length}


def load_rewards(entries, max_completion_length):
    """training.grpo.rewards -> [(name, score)], score(prompts, completions, completion_lengths, columns) giving
    one float per completion: the built-ins, or the user's function from its file (imported here, once), called
    as function(prompts=, completions=, **columns). Every backend calls the same scores."""
    import importlib.util
    import math
    import os

    loaded = []
    for entry in entries:
        if "builtin" in entry:
            name, builtin = entry["builtin"], BUILTIN_REWARDS[entry["builtin"]]
            loaded.append((name, _bound_builtin(builtin, max_completion_length)))
            continue
        path, function = entry["file"], entry["function"]
        module_name = "unifier_reward_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        user = getattr(module, function)

        def score(prompts, completions, lengths, columns, user=user, where=f"{path}:{function}"):
            try:
                values = list(user(prompts=prompts, completions=completions, **columns))
            except Exception as exc:
                raise RuntimeError(f"reward function {where} raised {type(exc).__name__}: {exc}") from exc
            if len(values) != len(completions):
                raise ValueError(
                    f"reward function {where} returned {len(values)} values for {len(completions)} completions"
                )
            for value in values:
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                ):
                    raise ValueError(
                        f"reward function {where} returned {value!r}: expected a finite number or None"
                    )
            return values

        loaded.append((function, score))
    return loaded


def _bound_builtin(builtin, max_completion_length):
    def score(prompts, completions, lengths, columns):
        return builtin(prompts, completions, lengths, columns, max_completion_length)

    return score


def trl_reward_functions(config):
    """The rewards as trl's GRPOTrainer calls them: completions arrive as assistant messages, the row columns
    as keyword lists; each function is named after its reward (metrics: rewards/<name>/mean)."""
    functions = []
    for name, score in load_rewards(config["rewards"], config["trainer_args"]["max_completion_length"]):

        def reward(prompts, completions, completion_ids=None, score=score, **kwargs):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            lengths = [len(ids) for ids in completion_ids]
            return score(prompts, texts, lengths, reward_columns(kwargs["unifier_columns"]))

        reward.__name__ = name
        functions.append(reward)
    return functions


def pretokenized_grpo_trainer(base):
    """trl's GRPOTrainer generating from unifier's prompt tokens (the row's prompt_ids) instead of rendering the
    prompt with the tokenizer's template; sampling, rewards, advantages and loss untouched."""

    class PreTokenizedGRPOTrainer(base):
        def _generate_and_score_completions(self, inputs):
            self._unifier_prompt_ids = [list(row["prompt_ids"]) for row in inputs]
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts):
            if len(self._unifier_prompt_ids) != len(prompts):
                raise AssertionError("prompt tokens and prompts are out of step")
            return self._unifier_prompt_ids, None, {}

    return PreTokenizedGRPOTrainer


def pretokenized_dpo_trainer():
    """trl's DPOTrainer (unsloth's, where unsloth replaced it) on rows that are already tokens: its own
    tokenization and prompt extraction are skipped, its collator and loss are untouched."""
    from trl import DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    return PreTokenizedDPOTrainer


def pretokenized_kto_trainer(base):
    """trl's KTO trainer on unifier's rows (prompt_ids, completion_ids, label, and kl_completion_ids: the answer
    unifier paired the prompt with for the KL estimate, data/tokens.py): its tokenization steps become these
    ids (no BOS/EOS added, no truncation: unifier's encoder did both) and its own pairing is not redone; the
    collator, reference handling and loss are trl's."""
    import trl.experimental.kto.kto_trainer as kto_module

    def process_tokens(example, model=None, **kwargs):
        prefix = kwargs["prefix"]
        prompt = list(example["prompt_ids"])
        answer = list(example["kl_completion_ids" if prefix == "KL_" else "completion_ids"])
        return {
            f"{prefix}prompt_input_ids": prompt,
            f"{prefix}prompt_attention_mask": [1] * len(prompt),
            f"{prefix}completion_input_ids": prompt + answer,
            f"{prefix}completion_attention_mask": [1] * (len(prompt) + len(answer)),
            f"{prefix}completion_labels": [-100] * len(prompt) + answer,
        }

    class PreTokenizedKTOTrainer(base):
        def __init__(self, *args, **kwargs):
            replaced = {
                "_tokenize": lambda batch, tokenizer: {},
                "_process_tokens": process_tokens,
                "_get_kl_dataset": lambda batch: batch,
            }
            saved = {name: getattr(kto_module, name) for name in replaced}
            for name, function in replaced.items():
                setattr(kto_module, name, function)
            try:
                super().__init__(*args, **kwargs)
            finally:
                for name, function in saved.items():
                    setattr(kto_module, name, function)

        def _track_num_input_tokens(self, inputs):
            """Tokens the policy reads: the padded answers batch and, for the KL estimate, the padded KL batch
            (transformers finds no input_ids in these batches and would count nothing)."""
            import torch

            if self.args.include_num_input_tokens_seen == "no" or "completion_input_ids" not in inputs:
                return super()._track_num_input_tokens(inputs)
            count = inputs["completion_input_ids"].numel()
            if "KL_completion_input_ids" in inputs:
                count += inputs["KL_completion_input_ids"].numel()
            count = torch.tensor(count, device=inputs["completion_input_ids"].device)
            self.state.num_input_tokens_seen += self.accelerator.gather(count).sum().item()

    return PreTokenizedKTOTrainer


def pretokenized_pair_trainer(base, nll_on_answer):
    """trl's ORPO / CPO (SimPO) trainer on rows that are already tokens (prompt_ids, chosen_ids, rejected_ids):
    each row becomes the prompt_/chosen_/rejected_ input_ids, attention_mask and labels its tokenize_row would
    write (no BOS/EOS added, no truncation: unifier's encoder did both), collator and losses untouched.
    nll_on_answer: ORPO's NLL term on the chosen answer's tokens only (the paper's and ms-swift's), where trl's
    ORPO counts the prompt tokens too."""
    import torch.nn.functional as F

    class PreTokenizedPairTrainer(base):
        def tokenize_row(self, feature, model=None):
            prompt = list(feature["prompt_ids"])
            row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for side in ("chosen", "rejected"):
                answer = list(feature[f"{side}_ids"])
                row[f"{side}_input_ids"] = prompt + answer
                row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
                row[f"{side}_labels"] = [-100] * len(prompt) + answer
            return row

        def _track_num_input_tokens(self, inputs):
            """Tokens seen as the concatenated, padded chosen + rejected batch (what the model reads, and
            ms-swift's count); transformers finds no input_ids in these batches and would count nothing."""
            import torch

            if self.args.include_num_input_tokens_seen == "no" or "chosen_input_ids" not in inputs:
                return super()._track_num_input_tokens(inputs)
            chosen, rejected = inputs["chosen_input_ids"], inputs["rejected_input_ids"]
            count = torch.tensor(
                2 * chosen.shape[0] * max(chosen.shape[1], rejected.shape[1]), device=chosen.device
            )
            self.state.num_input_tokens_seen += self.accelerator.gather(count).sum().item()

        if nll_on_answer:

            def concatenated_forward(self, model, batch):
                joined = self.concatenated_inputs(
                    batch,
                    is_encoder_decoder=False,
                    padding_value=self.padding_value,
                    device=self.accelerator.device,
                )
                chosen = batch["chosen_labels"].shape[0]
                outputs = model(
                    joined["concatenated_input_ids"],
                    attention_mask=joined["concatenated_attention_mask"],
                    use_cache=False,
                    **({"output_router_logits": True} if self.aux_loss_enabled else {}),
                )
                logits, labels = outputs.logits, joined["concatenated_labels"]
                nll = F.cross_entropy(
                    logits[:chosen, :-1].reshape(-1, logits.shape[-1]),
                    labels[:chosen, 1:].reshape(-1).to(logits.device),
                )
                logps = self.get_batch_logps(logits, labels, average_log_prob=True, is_encoder_decoder=False)
                result = (logps[:chosen], logps[chosen:], logits[:chosen, :-1], logits[chosen:, :-1], nll)
                return (*result, outputs.aux_loss) if self.aux_loss_enabled else result

    return PreTokenizedPairTrainer


def trl_class(reference):
    """'module:Class' (unifier/methods.py) -> the class; imported from `trl` where unsloth may have replaced it."""
    import importlib

    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def trainer_class(config):
    method = config["method"]
    if method == "dpo":
        return pretokenized_dpo_trainer()
    base = trl_class(config["trainer_classes"]["trainer"])
    if method == "kto":
        return pretokenized_kto_trainer(base)
    if method in ("orpo", "simpo"):
        return pretokenized_pair_trainer(base, nll_on_answer=method == "orpo")
    if method == "grpo":
        return pretokenized_grpo_trainer(base)
    return base


def start_deepspeed_on_cpu(config):
    """DeepSpeed on CPU processes (compute.strategy zero*, use_cpu): its communication layer over gloo, before
    the Trainer's arguments are read (accelerate starts it on GPUs only; without it DeepSpeed counts one
    process and its batch-size check fails)."""
    import os

    args = config["trainer_args"]
    if args.get("deepspeed") and args.get("use_cpu") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")


def build_trainer(config, model, tokenizer, train, evaluation, callbacks):
    import os

    os.environ.update(
        config["tracker_env"]
    )  # output.report_to: the trackers write into the run folder's logs/
    keep_cpu_4bit_trainable(model)
    adapter_weights = float32_adapter_weights(model)
    extra = {}
    if config["method"] == "grpo":
        extra["reward_funcs"] = trl_reward_functions(config)
    trainer = trainer_class(config)(
        **extra,
        model=model,
        args=trl_class(config["trainer_classes"]["config"])(**config["trainer_args"]),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    for name, param in trainer.model.named_parameters():
        if name in adapter_weights:
            param.data = adapter_weights[name]
    for callback in callbacks:  # a callback that draws its own progress replaces the default bar
        for replaced in getattr(callback, "replaces", ()):
            trainer.remove_callback(replaced)
    return trainer


def keep_cpu_4bit_trainable(model):
    """bitsandbytes' CPU 4-bit layers repack their weights on the first no-grad forward in eval mode (an
    evaluation) into an inference-only layout; every training step after it then fails ("a view of a leaf
    Variable ... in-place operation") or, for layers without bias, computes wrong gradients. Turning that
    repacking off keeps QLoRA with evaluation correct on CPU (nothing changes on a GPU)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def float32_adapter_weights(model):
    """trl casts QLoRA adapter weights to bfloat16 on its own (lossy); ms-swift and peft keep them in float32.
    unifier's convention is float32 trainable adapter weights on every backend: keep exact copies to restore
    once the trainer is built (before its optimizer exists)."""
    import torch

    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return {}
    return {
        name: param.detach().to(torch.float32).clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def train(config, trainer):
    checkpoint = config["resume_from_checkpoint"]
    model = trainer.model
    if checkpoint and len(getattr(model, "peft_config", {})) > 1:
        # trl's DPO keeps a frozen "ref" adapter beside "default"; transformers then restores only the adapter
        # sub-folders of a checkpoint, so the trained one is loaded here first
        model.load_adapter(checkpoint, adapter_name="default", is_trainable=True)
        model.set_adapter("default")
    return trainer.train(resume_from_checkpoint=checkpoint)


def save_outputs(config, trainer, tokenizer):
    import json
    import os

    paths = config["paths"]
    model = trainer.model
    if trainer.args.world_size > 1:  # several processes: every rank gathers, the main process writes
        state_dict = gathered_state_dict(trainer)
        if not trainer.is_world_process_zero():
            return
        target = paths["model_dir"] if config["lora"] is None else paths["adapter_dir"]
        model.save_pretrained(target, state_dict=state_dict)
        tokenizer.save_pretrained(target)
    elif config["lora"] is None:
        trainer.save_model(paths["model_dir"])
        tokenizer.save_pretrained(paths["model_dir"])
    else:
        model.save_pretrained(paths["adapter_dir"])
        tokenizer.save_pretrained(paths["adapter_dir"])
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    with open(os.path.join(trainer.args.output_dir, "log_history.json"), "w") as handle:
        json.dump(trainer.state.log_history, handle)
    if config["lora"] is None:
        return
    stopped_early = trainer.state.global_step < trainer.state.max_steps  # on a signal: no slow merge
    if config["save"] in ("merged", "both") and not stopped_early:
        merge_adapter(
            config.get("prequantized_from") or config["model"],
            config["revision"],
            config["trust_remote_code"],
            config["dtype"],
            paths["adapter_dir"],
            paths["merged_dir"],
        )
        tokenizer.save_pretrained(paths["merged_dir"])


def gathered_state_dict(trainer):
    """The whole model's weights for saving, from every rank's part (FSDP2 / DeepSpeed shard them; DDP does not:
    None, the model's own state dict)."""
    if trainer.is_fsdp_enabled:
        return trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_deepspeed_enabled:
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None


def merge_adapter(base_model, revision, trust_remote_code, dtype, adapter_dir, merged_dir):
    """The base model in model.dtype with the adapter merged in (for QLoRA too: merged into the 16-bit base,
    not re-quantized), the same on every backend."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        base_model, revision=revision, trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype)
    )
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(merged_dir)
