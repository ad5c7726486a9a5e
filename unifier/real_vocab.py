"""Tiny random models that carry REAL tokenizers and OFFICIAL chat templates, built offline.

llama.cpp's source release (which `make setup` downloads for the GGUF converter) holds vocabulary-only GGUF files
of real tokenizers (models/ggml-vocab-*.gguf) and the official chat templates of many families
(models/templates/*.jinja); `python -m unifier.llama_cpp` copies the ones below into
<environment>/share/llama.cpp/models. transformers reads such a vocab file (`gguf_file=`, the `gguf` package);
the special tokens are set as the family's instruct tokenizer_config.json sets them (the vocab files carry the base
models' settings), and a 2-layer model of the family's architecture with that vocabulary (tied embeddings, hidden
64, so 128k-152k vocabularies stay a few MB) is saved beside it. The tests train them on every backend
(tests/test_real_models.py); bench/ measures encoding speed on them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .builtin import cache_root

VERSION = "1"


@dataclass(frozen=True)
class Family:
    vocab: str  # models/ggml-vocab-*.gguf
    template: str  # models/templates/*.jinja
    architecture: str
    model_type: str
    bos: str | None
    eos: str
    pad: str | None


FAMILIES = {
    "qwen2.5": Family(
        "ggml-vocab-qwen2.gguf", "Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen2ForCausalLM", "qwen2",
        None, "<|im_end|>", "<|endoftext|>",
    ),
    "qwen3": Family(
        "ggml-vocab-qwen2.gguf", "Qwen-Qwen3-0.6B.jinja", "Qwen3ForCausalLM", "qwen3",
        None, "<|im_end|>", "<|endoftext|>",
    ),
    "llama3.1": Family(
        "ggml-vocab-llama-bpe.gguf", "meta-llama-Llama-3.1-8B-Instruct.jinja", "LlamaForCausalLM", "llama",
        "<|begin_of_text|>", "<|eot_id|>", None,
    ),
}  # fmt: skip
VOCAB_FILES = tuple(sorted({f.vocab for f in FAMILIES.values()}))
DIMENSIONS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)


def llama_cpp_models() -> Path:
    import sys

    return Path(sys.prefix) / "share" / "llama.cpp" / "models"


def model_dir(name: str) -> Path:
    return cache_root() / f"real-{name}-v{VERSION}"


def ensure(name: str) -> Path:
    """The family's tiny model folder, built on first use (about 15 s: transformers reads the GGUF vocab)."""
    folder = model_dir(name)
    if (folder / "model.safetensors").is_file():
        return folder
    family = FAMILIES[name]
    source = llama_cpp_models()
    if not (source / family.vocab).is_file():
        raise FileNotFoundError(
            f"{source / family.vocab} is missing: run `python -m unifier.llama_cpp` (make setup does)"
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=family.vocab)
    tokenizer.chat_template = (source / "templates" / family.template).read_text(encoding="utf-8")
    tokenizer.bos_token, tokenizer.eos_token = family.bos, family.eos
    tokenizer.pad_token = family.pad
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = family.bos is not None
    vocab_size = len(tokenizer)
    ids = {
        text: tokenizer.convert_tokens_to_ids(text)
        for text in filter(None, (family.bos, family.eos, family.pad))
    }
    config = AutoConfig.for_model(
        family.model_type,
        architectures=[family.architecture],
        vocab_size=vocab_size,
        bos_token_id=ids.get(family.bos),
        eos_token_id=ids[family.eos],
        pad_token_id=ids.get(family.pad),
        **DIMENSIONS,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer.save_pretrained(scratch)
        model.save_pretrained(scratch, safe_serialization=True)
        (scratch / "unifier_fixture.json").write_text(
            json.dumps({"family": name, "vocab": family.vocab, "template": family.template}, indent=1)
        )
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
