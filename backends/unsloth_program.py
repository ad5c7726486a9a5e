# Training program of unifier's `unsloth` backend: unsloth (FastLanguageModel) + trl, nothing else.
# `unify plan --backend unsloth` prints this file with CONFIG filled in; `unify run` calls main() on
# the same CONFIG. unsloth is imported first, as it must be, so it can patch transformers/trl/peft.
import json
import os
import sys

from unifier.backends.inline_library import *  # unifier:inline

CONFIG: dict = {}


def load_model_and_tokenizer(config):
    import torch
    from unsloth import FastLanguageModel

    kwargs = dict(config["from_pretrained"])
    kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=config["model"], **kwargs)
    if config["chat_template_file"]:
        with open(config["chat_template_file"], encoding="utf-8") as handle:
            tokenizer.chat_template = handle.read()
    if config["lora"] is not None:
        model = FastLanguageModel.get_peft_model(model, **config["lora"])
    return model, tokenizer


def main(config, callbacks=()):
    config = expand_references(config)  # ${NAME} references to secrets in the environment
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", config["compile_cache"])
    os.environ.setdefault(
        "HF_HUB_OFFLINE", "1" if config["offline"] else os.environ.get("HF_HUB_OFFLINE", "0")
    )
    import unsloth  # noqa: F401  (first: it patches transformers, trl and peft)
    from transformers import set_seed

    set_seed(config["seed"])  # before the model and adapter are built: the LoRA init depends on it
    model, tokenizer = load_model_and_tokenizer(config)
    train_rows, eval_rows = load_data(config)
    trainer = build_trainer(config, model, tokenizer, train_rows, eval_rows, callbacks)
    result = train(config, trainer)
    save_outputs(config, trainer, tokenizer)
    return trainer, result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else CONFIG)
