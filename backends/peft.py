"""The plain backend: transformers + peft + trl, in-process, one or more processes via torchrun."""
from __future__ import annotations

from pathlib import Path

from unifier.spec import JobSpec
from unifier.tiny import resolve_model_ref

from . import hf_args
from .base import Capabilities, Plan, RunResult, capability_problems, machine_problems, render_program

PROGRAM = Path(__file__).with_name("peft_program.py")


class PeftBackend:
    name = "peft"
    description = "transformers + peft + trl (SFTTrainer / DPOTrainer), the reference implementation"
    requires = ("torch", "transformers", "peft", "trl", "datasets")
    pip_extra = "peft"
    capabilities = Capabilities(
        strategies=("ddp",), max_processes=1,
        notes=("multi-process training: use the swift backend (torchrun, DeepSpeed, FSDP2)",),
    )

    def check(self, spec: JobSpec, here: bool = True) -> list[str]:
        problems = capability_problems(spec, self.capabilities, self.name)
        if not here:
            return problems
        return problems + machine_problems(spec, self.requires + (("bitsandbytes",) if spec.quantization.bits else ()),
                                           self.pip_extra)

    def config(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> dict:
        paths = hf_args.run_paths(run_dir)
        has_eval = bool(spec.data.eval or spec.data.eval_split)
        options = spec.options_for(self.name)
        trainer_args = {**hf_args.trainer_args(spec, run_dir, data_kind=data_kind), **options.get("trainer_args", {})}
        return {
            "model": resolve_model_ref(spec.model.name_or_path),
            "revision": spec.model.revision,
            "trust_remote_code": spec.model.trust_remote_code,
            "dtype": spec.model.dtype,
            "quantization": hf_args.bnb_kwargs(spec),
            "chat_template_file": hf_args.chat_template_file(spec),
            "lora": hf_args.lora_kwargs(spec),
            "gradient_checkpointing": spec.training.gradient_checkpointing,
            "seed": spec.training.seed,
            "method": spec.training.method,
            "train_file": paths["train_file"],
            "eval_file": paths["eval_file"] if has_eval else None,
            "trainer_args": trainer_args,
            "adapter_dir": paths["adapter_dir"],
            "model_dir": paths["model_dir"],
            "merged_dir": paths["merged_dir"],
            "save": spec.output.save,
        }

    def plan(self, spec: JobSpec, run_dir: str, data_kind: str = "chat") -> Plan:
        config = self.config(spec, run_dir, data_kind)
        return Plan(backend=self.name, run_dir=run_dir, kind="python", payload=config, script=render_program(PROGRAM, config))

    def run(self, plan: Plan, spec: JobSpec) -> RunResult:
        from . import peft_program
        from .hf_callbacks import unifier_callbacks

        callbacks = unifier_callbacks(plan.run_dir, spec.output.probe)
        peft_program.main(plan.payload, callbacks=callbacks)
        script = Path(plan.run_dir) / "native" / "train_peft.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(plan.script, encoding="utf-8")
        return RunResult(native_command=f"python {script}")


BACKEND = PeftBackend()
