# Steps shared by the peft and unsloth training programs (trl trainers, data loading, saving).
# `unify plan` inlines this file into the printed scripts, so they stay standalone.


def load_data(config):
    from datasets import load_dataset

    files = {"train": config["train_file"]}
    if config.get("eval_file"):
        files["eval"] = config["eval_file"]
    data = load_dataset("json", data_files=files)
    return data["train"], data.get("eval")


def build_trainer(config, model, tokenizer, train, evaluation, callbacks):
    adapter_weights = float32_adapter_weights(model)
    if config["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**config["trainer_args"]), train_dataset=train,
                             eval_dataset=evaluation, processing_class=tokenizer, callbacks=list(callbacks))
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(**config["trainer_args"]), train_dataset=train,
                             eval_dataset=evaluation, processing_class=tokenizer, callbacks=list(callbacks))
    for name, param in trainer.model.named_parameters():
        if name in adapter_weights:
            param.data = adapter_weights[name]
    for callback in callbacks:  # a callback that draws its own progress replaces the default bar
        for replaced in getattr(callback, "replaces", ()):
            trainer.remove_callback(replaced)
    return trainer


def float32_adapter_weights(model):
    """trl casts QLoRA adapter weights to bfloat16 on its own (lossy); ms-swift and peft keep them in float32.
    unifier's convention is float32 trainable adapter weights on every backend: keep exact copies to restore
    once the trainer is built (before its optimizer exists)."""
    import torch

    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return {}
    return {name: param.detach().to(torch.float32).clone() for name, param in model.named_parameters()
            if param.requires_grad}


def save_outputs(config, trainer, tokenizer):
    import json
    import os

    os.makedirs(trainer.args.output_dir, exist_ok=True)
    with open(os.path.join(trainer.args.output_dir, "log_history.json"), "w") as handle:
        json.dump(trainer.state.log_history, handle)
    model = trainer.model
    if config["lora"] is None:
        trainer.save_model(config["model_dir"])
        tokenizer.save_pretrained(config["model_dir"])
        return
    if config["save"] in ("adapter", "both"):
        model.save_pretrained(config["adapter_dir"])
        tokenizer.save_pretrained(config["adapter_dir"])
    if config["save"] in ("merged", "both"):
        if not config["save"] == "both":
            model.save_pretrained(config["adapter_dir"])
        merge_adapter(config)
        tokenizer.save_pretrained(config["merged_dir"])


def merge_adapter(config):
    """The base model in model.dtype with the adapter merged in (for QLoRA too: merged into the 16-bit base,
    not re-quantized), the same on every backend."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    name = config.get("prequantized_from") or config["model"]  # unsloth: the 16-bit original, not its 4-bit twin
    base = AutoModelForCausalLM.from_pretrained(name, revision=config["revision"],
                                                trust_remote_code=config["trust_remote_code"],
                                                dtype=getattr(torch, config["dtype"]))
    merged = PeftModel.from_pretrained(base, config["adapter_dir"]).merge_and_unload()
    merged.save_pretrained(config["merged_dir"])
