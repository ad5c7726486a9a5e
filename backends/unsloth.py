"""The unsloth backend: single-GPU speed and dynamic 4-bit quantization from the same recipe.

unsloth's own defaults differ from the spec's (load_in_4bit=True, lora_alpha=16, random_state=3407,
use_gradient_checkpointing="unsloth"): every one of them is passed explicitly. Its GPU path and its CPU
path (no CUDA: stock transformers + peft + trl underneath) accept different keywords; the plan passes
only keywords that are named parameters of both (tests/test_unsloth_contract.py checks this).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from unifier import methods as method_table
from unifier.builtin import cache_root
from unifier.spec import JobSpec

from . import trl_config
from .base import Capabilities, PlanContext, prequantized_weights, trains_on_cpu
from .plan import Plan
from .trl_backend import TrlBackend

# the versions tests/test_unsloth_contract.py was written against
CONTRACT_VERSIONS = {"unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9"}


class UnslothBackend(TrlBackend):
    requires = ("torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo")
    option_groups = ("from_pretrained", "get_peft_model", "trainer_args")
    option_targets: ClassVar[dict[str, str]] = {
        "from_pretrained": "from_pretrained",
        "get_peft_model": "lora",
        "trainer_args": "trainer_args",
    }
    program_module = "unifier.backends.unsloth_program"
    script_name = "train_unsloth.py"
    capabilities = Capabilities(
        quant_bits=(4,),
        methods=("sft", "dpo", "kto", "orpo", "simpo", "grpo"),
        strategies=("ddp",),
        max_processes=1,
        dora=False,
        packing="GPU only",
        notes=(
            "multi-GPU: unsloth's DDP support is not verified here; use the swift or peft backend",
            "4-bit is always NF4 with double quantization (unsloth fixes both)",
            "CPU: no packing (unsloth turns it off silently, so unifier refuses it); adamw_torch runs fused",
        ),
    )

    def backend_problems(self, spec: JobSpec, here: bool) -> list[str]:
        problems = []
        q = spec.quantization
        stored = prequantized_weights(
            spec
        )  # a stored 4-bit checkpoint loads as it is (unifier/prequantized.py)
        if q.bits == 4 and stored is None and (q.quant_type != "nf4" or not q.double_quant):
            problems.append(
                "unsloth quantizes 4-bit as NF4 with double quantization: set quantization.quant_type: nf4 "
                "and quantization.double_quant: true"
            )
        if q.bits and q.compute_dtype not in (None, spec.model.dtype):
            problems.append(
                f"quantization.compute_dtype {q.compute_dtype}: unsloth computes 4-bit matmuls in model.dtype "
                f"({spec.model.dtype}); remove quantization.compute_dtype or set it to {spec.model.dtype}"
            )
        if spec.data.packing and trains_on_cpu(spec, here):
            problems.append(
                "data.packing: unsloth's CPU path turns packing off silently; set data.packing: false on CPU"
            )
        if spec.training.method == "dpo" and spec.adapter.type == "full":
            problems.append("DPO with full fine-tuning is not supported by the unsloth backend here")
        if spec.training.method == "grpo" and not trains_on_cpu(spec, here):
            problems.append(
                "grpo on a GPU: unsloth replaces trl's GRPOTrainer with its own generated one there (PatchFastRL), "
                "which is not verified to generate from unifier's prompt tokens; use --backend peft or swift (on "
                "CPU unsloth runs trl's trainer, and its runs equal peft's)"
            )
        return problems

    def option_names(self, spec, group):
        from .signatures import function_parameters

        if group == "from_pretrained":
            return function_parameters("unsloth.models.loader", "FastLanguageModel.from_pretrained")
        if group == "get_peft_model":
            return function_parameters("unsloth.models.llama", "FastLlamaModel.get_peft_model")
        return super().option_names(spec, group)

    # ---- translation ----
    def translate_model(self, ctx: PlanContext) -> dict[str, Any]:
        m = ctx.spec.model
        return {
            "model": ctx.weights_location,
            "prequantized_from": ctx.prequantized.original if ctx.prequantized else None,
            "revision": m.revision,
            "trust_remote_code": m.trust_remote_code,
            "dtype": m.dtype,
            "chat_template_file": trl_config.chat_template_file(ctx),
            "offline": ctx.model.is_local,
            "compile_cache": str(cache_root() / "unsloth_compiled_cache"),
            "from_pretrained": {
                "max_seq_length": m.max_seq_length,
                "dtype": m.dtype,
                "trust_remote_code": m.trust_remote_code,
                "revision": m.revision,
                "use_exact_model_name": True,
            },
            **(
                {"trainer_args": {"max_length": m.max_seq_length}}
                if method_table.method(ctx.spec.training.method).trl_max_length
                else {}
            ),
        }

    def translate_adapter(self, ctx: PlanContext) -> dict[str, Any]:
        a, m = ctx.spec.adapter, ctx.spec.model
        if a.type == "full":
            return {"lora": None, "from_pretrained": {"full_finetuning": True}}
        lora = {
            "r": a.r,
            "lora_alpha": a.alpha,
            "lora_dropout": a.dropout,
            "target_modules": trl_config.target_modules(ctx),
            "bias": "none",
            "use_rslora": a.use_rslora,
            "modules_to_save": list(a.modules_to_save) or None,
            "max_seq_length": m.max_seq_length,
            "loftq_config": None,
            "init_lora_weights": True,
        }
        return {"lora": lora, "from_pretrained": {"full_finetuning": False}}

    def translate_quantization(self, ctx: PlanContext) -> dict[str, Any]:
        q, a = ctx.spec.quantization, ctx.spec.adapter
        return {
            "from_pretrained": {
                "load_in_4bit": q.bits == 4,
                "load_in_8bit": False,
                "load_in_16bit": q.bits is None and a.type != "full",
            }
        }

    def translate_optimisation(self, ctx: PlanContext) -> dict[str, Any]:
        t = ctx.spec.training
        fragment = trl_config.optimisation_section(ctx)
        fragment["from_pretrained"] = {"use_gradient_checkpointing": t.gradient_checkpointing}
        if ctx.spec.adapter.type != "full":
            fragment["lora"] = {
                "use_gradient_checkpointing": t.gradient_checkpointing,
                "random_state": t.seed,
            }
        return fragment

    # ---- running ----
    def prepare_process(self, plan: Plan) -> None:
        os.environ["UNSLOTH_COMPILE_LOCATION"] = plan.program.config["compile_cache"]

    def details(self, plan: Plan) -> dict[str, Any]:
        import unsloth
        from unsloth import FastLanguageModel

        path = "cpu" if FastLanguageModel.__module__.startswith("unsloth._cpu") else "gpu"
        config = plan.program.config
        return {
            "unsloth_path": path,
            "unsloth_version": unsloth.__version__,
            "model_loaded": config["model"],
            "prequantized_from": config["prequantized_from"],
        }


BACKEND_CLASS = UnslothBackend
