# Training program of unifier's `peft` backend: transformers + peft + trl, nothing else.
# `unify plan --backend peft` prints this file with CONFIG filled in; `unify run` calls main() on the
# same CONFIG, so the printed script reproduces the run without unifier.
import json
import sys

from unifier.backends.inline_library import *  # unifier:inline

CONFIG: dict = {}


def load_model_and_tokenizer(config):
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BitsAndBytesConfig,
    )

    tokenizer = AutoTokenizer.from_pretrained(
        config["model"], revision=config["revision"], trust_remote_code=config["trust_remote_code"]
    )
    if config["chat_template_file"]:
        with open(config["chat_template_file"], encoding="utf-8") as handle:
            tokenizer.chat_template = handle.read()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = dict(
        revision=config["revision"],
        trust_remote_code=config["trust_remote_code"],
        dtype=getattr(torch, config["dtype"]),
    )
    quant = config["quantization"]
    if quant:
        quant = dict(quant)
        if "bnb_4bit_compute_dtype" in quant:
            quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    if config["task"] == "sequence_score":  # a reward model: one score per sequence, from a new `score` head
        model = AutoModelForSequenceClassification.from_pretrained(config["model"], num_labels=1, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(config["model"], **kwargs)
    return model, tokenizer


def add_adapter(model, config):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config["quantization"] or config["prequantized"]:  # a 4-bit base, quantized now or stored so
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config["gradient_checkpointing"]
        )
    if config["lora"] is None:  # full fine-tuning
        return model
    task = (
        "SEQ_CLS" if config["task"] == "sequence_score" else "CAUSAL_LM"
    )  # SEQ_CLS trains the score head too
    return get_peft_model(model, LoraConfig(task_type=task, **config["lora"]))


def main(config, callbacks=()):
    config = expand_references(config)  # ${NAME} references to secrets in the environment
    from transformers import set_seed

    start_deepspeed_on_cpu(config)
    set_seed(config["seed"])  # before the model and adapter are built: the LoRA init depends on it
    model, tokenizer = load_model_and_tokenizer(config)
    model = add_adapter(model, config)
    train_rows, eval_rows = load_data(config)
    trainer = build_trainer(config, model, tokenizer, train_rows, eval_rows, callbacks)
    result = train(config, trainer)
    save_outputs(config, trainer, tokenizer)
    return trainer, result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else CONFIG)
