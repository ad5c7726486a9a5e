# Training program of unifier's `peft` backend: transformers + peft + trl, nothing else.
# `unify plan --backend peft` prints this file with CONFIG filled in; `unify run` calls main() on the
# same CONFIG, so the printed script reproduces the run without unifier.
import json
import sys

CONFIG: dict = {}


def load_model_and_tokenizer(config):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(config["model"], revision=config["revision"],
                                              trust_remote_code=config["trust_remote_code"])
    if config["chat_template_file"]:
        with open(config["chat_template_file"], encoding="utf-8") as handle:
            tokenizer.chat_template = handle.read()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = dict(revision=config["revision"], trust_remote_code=config["trust_remote_code"],
                  dtype=getattr(torch, config["dtype"]))
    quant = config["quantization"]
    if quant:
        quant = dict(quant)
        if "bnb_4bit_compute_dtype" in quant:
            quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    model = AutoModelForCausalLM.from_pretrained(config["model"], **kwargs)
    return model, tokenizer


def add_adapter(model, config):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config["quantization"]:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config["gradient_checkpointing"])
    if config["lora"] is None:  # full fine-tuning
        return model
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **config["lora"]))


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


def save(config, trainer, tokenizer):
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


def main(config, callbacks=()):
    from transformers import set_seed

    set_seed(config["seed"])  # before the model and adapter are built: the LoRA init depends on it
    model, tokenizer = load_model_and_tokenizer(config)
    model = add_adapter(model, config)
    train, evaluation = load_data(config)
    trainer = build_trainer(config, model, tokenizer, train, evaluation, callbacks)
    result = trainer.train()
    save(config, trainer, tokenizer)
    return trainer, result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else CONFIG)
