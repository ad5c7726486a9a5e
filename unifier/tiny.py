"""The embedded default: a tiny Qwen2-architecture model built locally (no download).

A byte-level BPE tokenizer is trained on the bundled chat data, a 2-layer Qwen2 is initialised from a
fixed seed, and both are saved as an ordinary Hugging Face folder that every backend loads like any
other local model. The same builder is the test fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .builtin import ASSETS, cache_root, chatml_template_file
from .runfolder import scratch_folder

TINY_VERSION = "2"  # bump when the recipe below changes, so cached folders are rebuilt
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512
# hidden 128 with 2 KV heads of 32 keeps every linear layer >= 64 wide (bitsandbytes' CPU 4-bit packing needs that)
TINY_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    rms_norm_eps=1e-6,
)


def tiny_model_dir() -> Path:
    return cache_root() / f"tiny-qwen2-v{TINY_VERSION}"


def planned_config() -> dict:
    """The parts of config.json that planning reads, known before the model is built (tests compare them
    with the built folder)."""
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **TINY_CONFIG}


def planned_weight_shapes() -> dict[str, list[int]]:
    """The tensor names and shapes of the built model.safetensors, from TINY_CONFIG alone (tests compare them
    with the built folder), so `unify plan` can resolve target modules before the model exists."""
    c = TINY_CONFIG
    hidden, inter = c["hidden_size"], c["intermediate_size"]
    kv = hidden // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = {
        "model.embed_tokens.weight": [VOCAB_SIZE, hidden],
        "model.norm.weight": [hidden],
        "lm_head.weight": [VOCAB_SIZE, hidden],
    }
    for i in range(c["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        shapes.update(
            {
                f"{layer}.input_layernorm.weight": [hidden],
                f"{layer}.post_attention_layernorm.weight": [hidden],
                f"{layer}.self_attn.q_proj.weight": [hidden, hidden],
                f"{layer}.self_attn.q_proj.bias": [hidden],
                f"{layer}.self_attn.k_proj.weight": [kv, hidden],
                f"{layer}.self_attn.k_proj.bias": [kv],
                f"{layer}.self_attn.v_proj.weight": [kv, hidden],
                f"{layer}.self_attn.v_proj.bias": [kv],
                f"{layer}.self_attn.o_proj.weight": [hidden, hidden],
                f"{layer}.mlp.gate_proj.weight": [inter, hidden],
                f"{layer}.mlp.up_proj.weight": [inter, hidden],
                f"{layer}.mlp.down_proj.weight": [hidden, inter],
            }
        )
    return shapes


def ensure_tiny_model(target: Path | None = None) -> Path:
    """Build the tiny model once; later calls reuse the folder. Safe against concurrent builders."""
    target = Path(target or tiny_model_dir())
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_folder(target.parent, ".building-")
    try:
        _build(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _training_texts() -> list[str]:
    texts = []
    for name in ("tiny_chat.jsonl", "tiny_preference.jsonl"):
        for line in (ASSETS / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for key in ("messages", "prompt", "chosen", "rejected"):
                texts += [m["content"] for m in row.get(key, [])]
    texts += [
        "system\n",
        "user\n",
        "assistant\n",
        "You are a helpful assistant.",
        "Hello! How can I help you today?",
    ]
    return texts


def _build(folder: Path) -> None:
    import torch
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # the pipeline transformers' Qwen2Tokenizer builds around a vocabulary (so tokenizer.json is the truth)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_training_texts(), trainer=trainer)
    # the corpus may run out of merges before VOCAB_SIZE: reserved tokens fill the rest, so the embedding
    # shape is known before the model is built (planned_weight_shapes)
    spare = VOCAB_SIZE - bpe.get_vocab_size()
    if spare > 0:
        bpe.add_special_tokens([AddedToken(f"<|reserved_{index}|>", special=True) for index in range(spare)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tokenizer.chat_template = chatml_template_file().read_text(encoding="utf-8")
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **TINY_CONFIG,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False, max_new_tokens=32
    )
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "UNIFIER_TINY_MODEL").write_text(f"built by unifier.tiny v{TINY_VERSION}\n")
