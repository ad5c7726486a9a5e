"""The unsloth backend: single-GPU speed and dynamic 4-bit quantization from the same recipe.

unsloth's own defaults differ from the spec's (load_in_4bit=True, lora_alpha=16, random_state=3407,
use_gradient_checkpointing="unsloth"): every one of them is passed explicitly. Its GPU path and its CPU
path (no CUDA: stock transformers + peft + trl underneath) accept different keywords; the plan passes
only keywords that are named parameters of both (tests/test_unsloth_contract.py checks this).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from unifier.errors import UserError
from unifier.spec import JobSpec
from unifier.tiny import cache_root, resolve_model_ref

from . import hf_args
from .base import Capabilities, Plan, RunResult, capability_problems, machine_problems, render_program

PROGRAM = Path(__file__).with_name("unsloth_program.py")
# the versions tests/test_unsloth_contract.py was written against
CONTRACT_VERSIONS = {"unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9"}
LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class UnslothBackend:
    name = "unsloth"
    description = "unsloth FastLanguageModel + trl: fastest single-GPU LoRA/QLoRA, dynamic 4-bit checkpoints"
    requires = ("torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo")
    pip_extra = "unsloth"
    capabilities = Capabilities(
        quant_bits=(4,), methods=("sft", "dpo"), strategies=("ddp",), max_processes=1, dora=False,
        notes=("multi-GPU: unsloth's DDP support is not verified here; use the swift backend",
               "4-bit is always NF4 with double quantization (unsloth fixes both)",
               "CPU: no packing (unsloth turns it off silently, so unifier refuses it); adamw_torch runs fused"),
    )

    def check(self, spec: JobSpec, here: bool = True) -> list[str]:
        problems = capability_problems(spec, self.capabilities, self.name)
        q = spec.quantization
        if q.bits == 4 and (q.quant_type != "nf4" or not q.double_quant):
            problems.append("unsloth quantizes 4-bit as NF4 with double quantization: set quantization.quant_type: nf4 "
                            "and quantization.double_quant: true")
        if spec.data.packing and hf_args.trains_on_cpu(spec, here):
            problems.append("data.packing: unsloth's CPU path turns packing off silently; set data.packing: false on CPU")
        if spec.training.method == "dpo" and spec.adapter.type == "full":
            problems.append("DPO with full fine-tuning is not supported by the unsloth backend here")
        if not here:
            return problems
        return problems + machine_problems(spec, self.requires, self.pip_extra)

    def resolve_model_name(self, spec: JobSpec) -> tuple[str, str | None]:
        """Dynamic 4-bit: a hub name maps to unsloth's pre-quantized '-unsloth-bnb-4bit' twin, read offline."""
        name = resolve_model_ref(spec.model.name_or_path)
        if spec.quantization.bits != 4 or not spec.quantization.prequantized or Path(name).exists():
            return name, None
        twin = prequantized_twin(name)
        return (twin, name) if twin else (name, None)

    def config(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> dict:
        paths = hf_args.run_paths(run_dir)
        a, q, m, t = spec.adapter, spec.quantization, spec.model, spec.training
        model, original = self.resolve_model_name(spec)
        has_eval = bool(spec.data.eval or spec.data.eval_split)
        options = spec.options_for(self.name)
        lora = None
        if a.type != "full":
            lora = {
                "r": a.r, "lora_alpha": a.alpha, "lora_dropout": a.dropout,
                "target_modules": LINEAR_MODULES if a.target_modules == "all-linear" else list(a.target_modules),
                "bias": "none", "use_gradient_checkpointing": t.gradient_checkpointing, "random_state": t.seed,
                "use_rslora": a.use_rslora, "modules_to_save": list(a.modules_to_save) or None,
                "max_seq_length": m.max_seq_length, "loftq_config": None, "init_lora_weights": True,
                **options.get("get_peft_model", {}),
            }
        return {
            "model": model,
            "prequantized_from": original,
            "from_pretrained": {
                "max_seq_length": m.max_seq_length, "dtype": m.dtype,
                "load_in_4bit": q.bits == 4, "load_in_8bit": False, "load_in_16bit": q.bits is None and a.type != "full",
                "full_finetuning": a.type == "full", "trust_remote_code": m.trust_remote_code, "revision": m.revision,
                "use_gradient_checkpointing": t.gradient_checkpointing, "use_exact_model_name": True,
                **options.get("from_pretrained", {}),
            },
            "lora": lora,
            "chat_template_file": hf_args.chat_template_file(spec),
            "seed": t.seed,
            "method": t.method,
            "train_file": paths["train_file"],
            "eval_file": paths["eval_file"] if has_eval else None,
            "trainer_args": {**hf_args.trainer_args(spec, run_dir, data_kind=data_kind), **options.get("trainer_args", {})},
            "adapter_dir": paths["adapter_dir"], "model_dir": paths["model_dir"], "merged_dir": paths["merged_dir"],
            "save": spec.output.save, "revision": m.revision, "trust_remote_code": m.trust_remote_code, "dtype": m.dtype,
            "compile_cache": str(cache_root() / "unsloth_compiled_cache"),
            "offline": Path(model).exists(),
        }

    def plan(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> Plan:
        config = self.config(spec, run_dir, data_kind)
        script = render_program(PROGRAM, config)
        if config["prequantized_from"]:
            script = f"# dynamic 4-bit: {config['prequantized_from']} -> {config['model']} (unsloth's mapper)\n" + script
        return Plan(backend=self.name, run_dir=run_dir, kind="python", payload=config, script=script)

    def run(self, plan: Plan, spec: JobSpec) -> RunResult:
        os.environ["UNSLOTH_COMPILE_LOCATION"] = plan.payload["compile_cache"]
        from . import unsloth_program
        from .hf_callbacks import unifier_callbacks

        callbacks = unifier_callbacks(plan.run_dir, spec.output.probe)
        unsloth_program.main(plan.payload, callbacks=callbacks)
        import unsloth
        from unsloth import FastLanguageModel

        path = "cpu" if FastLanguageModel.__module__.startswith("unsloth._cpu") else "gpu"
        script = Path(plan.run_dir) / "native" / "train_unsloth.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(plan.script, encoding="utf-8")
        return RunResult(native_command=f"python {script}",
                         backend_details={"unsloth_path": path, "unsloth_version": unsloth.__version__,
                                          "model_loaded": plan.payload["model"],
                                          "prequantized_from": plan.payload["prequantized_from"]})


def prequantized_twin(name: str) -> str | None:
    """Look the name up in unsloth's mapper.py (a file with no imports) without importing unsloth."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        return None
    mapper = Path(list(spec.submodule_search_locations)[0]) / "models" / "mapper.py"
    namespace: dict = {}
    try:
        exec(compile(mapper.read_text(encoding="utf-8"), str(mapper), "exec"), namespace)
    except Exception as exc:  # a changed mapper must not break planning
        raise UserError(f"could not read unsloth's model mapper {mapper}: {exc}",
                        hint="set quantization.prequantized: false to load the name as written") from None
    table = namespace.get("FLOAT_TO_INT_MAPPER", {})
    twin = table.get(name) or table.get(name.lower())
    return twin if twin and twin.endswith("-unsloth-bnb-4bit") else None


BACKEND = UnslothBackend()
