"""The memory a run needs per GPU, before it runs (`unify plan` prints it; no torch).

From the model's weight shapes (safetensors headers) or its config.json, and the recipe: frozen weights at their
storage precision (bitsandbytes 4-bit: 4 bits + block constants), the adapter and its gradients (float32, the
convention on every backend), AdamW's two states, and the activations the backward pass keeps at the batch
size and max_seq_length (per layer: the inputs of every matmul and norm, the MLP's intermediate products, the
attention outputs; plus the logits in float32 for the loss), with and without gradient checkpointing. ZeRO-2
shards gradients and optimizer states over the processes, ZeRO-3/FSDP the weights too. tests/test_memory.py
checks each part against tensors measured on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import methods as method_table
from .model_info import ModelInfo
from .prequantized import bnb_4bit_config

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NOT_QUANTIZED = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out")  # bitsandbytes keeps these in dtype
# config.json of models the recipes name, for hub models not in the local cache (their published dimensions)
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-8B": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "Qwen/Qwen2.5-1.5B": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
}


@dataclass
class MemoryEstimate:
    params: int
    trainable: int
    weights: float  # bytes, per process
    adapter: float
    gradients: float
    optimizer: float
    activations: float  # with the recipe's gradient_checkpointing
    activations_other: float  # with the other setting
    checkpointing: bool
    world_size: int
    strategy: str
    source: str
    tokens: int  # per micro-batch
    offloaded: float = 0.0  # bytes per process kept in CPU memory by a *_offload strategy
    method: str = "sft"  # what the activations and weights assume about the training method

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.gradients + self.optimizer + self.activations

    def lines(self) -> list[str]:
        gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
        other = "off" if self.checkpointing else "on"
        shard = f", {self.strategy} over {self.world_size} processes" if self.world_size > 1 else ""
        if self.world_size == 1 and self.strategy != "ddp":
            shard = f", {self.strategy}"
        lines = [
            f"memory estimate per GPU ({self.source}; {self.method}; {self.tokens} tokens per micro-batch{shard}):",
            f"  weights      {gib(self.weights)}  ({self.params / 1e6:,.1f}M parameters)",
            f"  adapter      {gib(self.adapter)}  ({self.trainable / 1e6:,.2f}M trainable parameters)"
            if self.adapter
            else f"  trainable    (the weights: {self.trainable / 1e6:,.1f}M parameters)",
            f"  gradients    {gib(self.gradients)}",
            f"  optimizer    {gib(self.optimizer)}",
            f"  activations  {gib(self.activations)}  (gradient checkpointing "
            f"{'on' if self.checkpointing else 'off'}; {other}: {self.activations_other / GIB:.2f} GiB)",
            f"  total        {gib(self.total)}  (+ the CUDA context and allocator slack, about 1 GiB)",
        ]
        if self.offloaded:
            lines.append(f"  offloaded    {gib(self.offloaded)}  in CPU memory per process ({self.strategy})")
        return lines


def model_dimensions(info: ModelInfo, ref: str) -> tuple[dict[str, Any] | None, str]:
    if info.config:
        return info.config, "config.json"
    if ref in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[ref], "unifier's table of known models"
    return None, ""


def weight_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """A Llama/Qwen-style decoder's weight shapes from its config (when the weights are not readable here)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    vocab = config["vocab_size"]
    shapes: dict[str, list[int]] = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h]}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": [heads * head_dim, h],
                p + "self_attn.k_proj.weight": [kv * head_dim, h],
                p + "self_attn.v_proj.weight": [kv * head_dim, h],
                p + "self_attn.o_proj.weight": [h, heads * head_dim],
                p + "mlp.gate_proj.weight": [i, h],
                p + "mlp.up_proj.weight": [i, h],
                p + "mlp.down_proj.weight": [h, i],
                p + "input_layernorm.weight": [h],
                p + "post_attention_layernorm.weight": [h],
            }
        )
        if config.get("attention_bias", config.get("model_type") == "qwen2"):  # Qwen2: q/k/v biases
            shapes.update(
                {
                    p + "self_attn.q_proj.bias": [heads * head_dim],
                    p + "self_attn.k_proj.bias": [kv * head_dim],
                    p + "self_attn.v_proj.bias": [kv * head_dim],
                }
            )
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = [vocab, h]
    return shapes


REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def estimate(spec, info: ModelInfo, target_modules: list[str] | None) -> MemoryEstimate | None:
    """None when the model's dimensions are not known here (or not those of a decoder this knows)."""
    config, source = model_dimensions(info, spec.model.name_or_path)
    if config is None or not all(
        isinstance(config.get(key), int) and not isinstance(config.get(key), bool) and config[key] > 0
        for key in REQUIRED
    ):
        return None
    # a stored 4-bit checkpoint's headers hold packed bytes and quantization constants: count the config's shapes,
    # its 16-bit modules (llm_int8_skip_modules) at the model's dtype
    stored = bnb_4bit_config(info.config)
    shapes = weight_shapes(config) if stored or not info.weight_shapes else info.weight_shapes
    if info.weight_shapes and not stored:
        source = "safetensors headers"
    kept_in_dtype = NOT_QUANTIZED + tuple((stored or {}).get("llm_int8_skip_modules") or ())
    dtype_bytes = DTYPE_BYTES[spec.model.dtype]
    a, q, t = spec.adapter, spec.quantization, spec.training
    full = a.type == "full"

    params = sum(math.prod(shape) for shape in shapes.values())
    weights = 0.0
    for name, shape in shapes.items():
        n = math.prod(shape)
        linear = len(shape) == 2 and not any(part in name for part in kept_in_dtype)
        if q.bits == 4 and linear:
            weights += n * (0.5 + (1 / 64 + 4 / (64 * 256) if q.double_quant else 4 / 64))
        elif q.bits == 8 and linear:
            weights += n * (1 + 4 / 4096)
        else:
            weights += n * dtype_bytes
    if full:
        trainable = params
        adapter = 0.0
        state_bytes = dtype_bytes  # the trainer's states follow the parameters' dtype
        grad_bytes = dtype_bytes
    else:
        targets = set(target_modules or [])
        trainable = 0
        for name, shape in shapes.items():
            module = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
            if len(shape) == 2 and module in targets:
                trainable += a.r * (shape[0] + shape[1])
            elif any(name.startswith(f"{kept}.") or f".{kept}." in name for kept in a.modules_to_save):
                trainable += math.prod(shape)
        adapter = trainable * 4.0
        state_bytes = 4
        grad_bytes = 4
    gradients = trainable * grad_bytes
    world, strategy = spec.compute.world_size, spec.compute.strategy
    deepspeed = strategy.startswith(
        "zero"
    )  # one process only with *_offload (backends/base.py refuses the rest)
    if full and deepspeed and dtype_bytes < 4:
        state_bytes = 4  # DeepSpeed keeps float32 master weights and float32 states for 16-bit training
    states = {
        "adamw_torch": 2 * state_bytes,
        "adamw_8bit": 2,
        "paged_adamw_8bit": 2,
        "paged_adamw_32bit": 2 * state_bytes,
        "sgd": 0,
    }[t.optimizer]
    optimizer = trainable * states
    if full and deepspeed and dtype_bytes < 4:
        optimizer += trainable * 4  # the master weights

    entry = method_table.method(t.method)
    pairs = entry.pairwise  # chosen and rejected go through the model in one concatenated batch
    tokens = t.per_device_batch_size * spec.model.max_seq_length * (2 if pairs else 1)
    # a frozen copy; LoRA: the base, adapter off
    reference = params * dtype_bytes if entry.reference_model and full else 0.0
    with_checkpointing = activation_bytes(config, tokens, spec, checkpointing=True)
    without = activation_bytes(config, tokens, spec, checkpointing=False)
    weights += reference
    offloaded = 0.0
    if strategy.startswith(("zero2", "zero3", "fsdp")):
        gradients /= world
        optimizer /= world
        if strategy.startswith(("zero3", "fsdp")):
            weights /= world
            adapter /= world
        if strategy.endswith("_offload"):  # optimizer states (and ZeRO-3's parameters) live in CPU memory
            offloaded, optimizer = optimizer, 0.0
            if strategy.startswith("zero3"):
                offloaded, weights = offloaded + weights, 0.0
    checkpointing = t.gradient_checkpointing or (world > 1 and strategy == "fsdp2")
    return MemoryEstimate(
        params=params,
        trainable=trainable,
        weights=weights,
        adapter=adapter,
        gradients=gradients,
        optimizer=optimizer,
        activations=with_checkpointing if checkpointing else without,
        activations_other=without if checkpointing else with_checkpointing,
        checkpointing=checkpointing,
        world_size=world,
        strategy=strategy,
        source=source,
        tokens=tokens,
        offloaded=offloaded,
        method=method_note(entry, full),
    )


def activation_bytes(config: dict[str, Any], tokens: int, spec, *, checkpointing: bool) -> float:
    """Activation memory at the backward pass's peak, for `tokens` tokens of one micro-batch."""
    return sum(activation_parts(config, tokens, spec, checkpointing=checkpointing).values())


def activation_parts(config: dict[str, Any], tokens: int, spec, *, checkpointing: bool) -> dict[str, float]:
    """saved: what autograd keeps from the forward pass (tests/test_memory.py measures it); recompute: one
    layer's activations rebuilt at a time under gradient checkpointing; logits_grad: the float32 gradient of
    the logits, beside the saved log-softmax at the start of the backward pass."""
    h, i = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = (config.get("num_key_value_heads") or heads) * head_dim
    q_dim = heads * head_dim
    layers, vocab = config["num_hidden_layers"], config["vocab_size"]
    element = DTYPE_BYTES[spec.model.dtype]
    # per token and layer, in elements: two norm inputs and the normed inputs of q/k/v and gate/up (4 x h),
    # q/k/v after the rotary embedding (q_dim + 2 kv), the attention output and o_proj's input (2 x q_dim), and
    # the MLP's gate, up, act(gate) and their product (4 x i)
    per_layer = (4 * h + q_dim + 2 * kv + 2 * q_dim + 4 * i) * element
    if spec.adapter.type == "full":  # trained norms keep their outputs too, and every matmul its input
        per_layer += int(3.5 * h) * element
    else:
        per_layer += 7 * spec.adapter.r * element  # each adapted matmul's rank-r intermediate (all-linear: 7)
        if (
            spec.adapter.dropout > 0
        ):  # dropout keeps each adapted module's own copy of its input, and its mask
            per_layer += (5 * h + q_dim + i) * (element + 1)
    log_softmax = (
        h * element + vocab * 4
    ) * tokens  # the final norm's input; log-softmax in float32 for the loss
    if checkpointing:
        saved = layers * h * element * tokens + log_softmax  # each layer's input
        recompute = per_layer * tokens  # one layer rebuilt at a time
    else:
        saved, recompute = layers * per_layer * tokens + log_softmax, 0
    return {"saved": float(saved), "recompute": float(recompute), "logits_grad": float(vocab * 4 * tokens)}


GPU_SIZES_GIB = (16, 24, 40, 48, 80, 141)


def estimate_for(spec) -> MemoryEstimate | None:
    """The estimate for a spec, with target modules resolved as the backends resolve them."""
    from .model_info import read_model_info

    info = read_model_info(spec.model.name_or_path, spec.model.revision)
    targets = spec.adapter.target_modules
    if targets == "all-linear":
        targets = info.linear_modules()
        if targets is None:
            config, _ = model_dimensions(info, spec.model.name_or_path)
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            if config is None:
                return None
    return estimate(spec, info, list(targets))


def implied_choice(spec, estimate: MemoryEstimate) -> str:
    """What the estimate means for the recipe: the smallest GPU it fits, or what to change."""
    if spec.compute.device == "cpu":
        return f"on CPU: about {estimate.total / GIB:.2f} GiB of RAM besides the libraries"
    need = estimate.total / GIB + 1.0
    fits = next((size for size in GPU_SIZES_GIB if need <= size), None)
    if fits is not None:
        return f"fits a {fits} GiB GPU per process (about {need:.1f} GiB)"
    advice = []
    if spec.quantization.bits is None and spec.adapter.type != "full":
        advice.append("QLoRA (adapter.type: qlora, quantization.bits: 4; unsloth or peft)")
    if not spec.training.gradient_checkpointing:
        advice.append("training.gradient_checkpointing: true")
    advice.append("ZeRO-3 over more GPUs (compute.strategy: zero3, swift backend)")
    return (
        f"needs about {need:.0f} GiB per process, more than one {GPU_SIZES_GIB[-1]} GiB GPU: try "
        + ", or ".join(advice)
    )


def method_note(entry, full: bool) -> str:
    if entry.name == "grpo":
        return (
            "grpo: per_device_batch_size completions of up to max_seq_length tokens (prompt + answer) per "
            "micro-batch, plus generation's KV cache (not counted)"
        )
    if not entry.pairwise:
        return entry.name
    note = f"{entry.name}: chosen + rejected per pair in one batch"
    if entry.reference_model:
        note += (
            ", a frozen reference copy of the weights"
            if full
            else ", reference = the base with the adapter off"
        )
    return note
