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
    if config["method"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(model=model, args=DPOConfig(**config["trainer_args"]), train_dataset=train,
                          eval_dataset=evaluation, processing_class=tokenizer, callbacks=list(callbacks))
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(model=model, args=SFTConfig(**config["trainer_args"]), train_dataset=train,
                      eval_dataset=evaluation, processing_class=tokenizer, callbacks=list(callbacks))


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
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        if not config["save"] == "both":
            model.save_pretrained(config["adapter_dir"])
        base = AutoModelForCausalLM.from_pretrained(config["model"], revision=config["revision"],
                                                    trust_remote_code=config["trust_remote_code"],
                                                    dtype=getattr(torch, config["dtype"]))
        merged = PeftModel.from_pretrained(base, config["adapter_dir"]).merge_and_unload()
        merged.save_pretrained(config["merged_dir"])
        tokenizer.save_pretrained(config["merged_dir"])
