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
    columns = (
        ("prompt_ids", "chosen_ids", "rejected_ids")
        if config["data_kind"] == "preference"
        else ("input_ids", "assistant_masks")
    )
    features = Features({name: Sequence(Value("int32")) for name in columns})
    data = load_dataset("json", data_files=files, features=features)
    return data["train"], data.get("eval")


def pretokenized_dpo_trainer():
    """trl's DPOTrainer (unsloth's, where unsloth replaced it) on rows that are already tokens: its own
    tokenization and prompt extraction are skipped, its collator and loss are untouched."""
    from trl import DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    return PreTokenizedDPOTrainer


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
    if method in ("orpo", "simpo"):
        return pretokenized_pair_trainer(base, nll_on_answer=method == "orpo")
    return base


def build_trainer(config, model, tokenizer, train, evaluation, callbacks):
    import os

    os.environ.update(
        config["tracker_env"]
    )  # output.report_to: the trackers write into the run folder's logs/
    keep_cpu_4bit_trainable(model)
    adapter_weights = float32_adapter_weights(model)
    trainer = trainer_class(config)(
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
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    with open(os.path.join(trainer.args.output_dir, "log_history.json"), "w") as handle:
        json.dump(trainer.state.log_history, handle)
    model = trainer.model
    if config["lora"] is None:
        trainer.save_model(paths["model_dir"])
        tokenizer.save_pretrained(paths["model_dir"])
        return
    model.save_pretrained(paths["adapter_dir"])
    tokenizer.save_pretrained(paths["adapter_dir"])
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
