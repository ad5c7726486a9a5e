"""What the peft and unsloth backends share: a Python program (CONFIG + standalone script) on trl trainers.

Subclasses name their program and translate the model, adapter and quantization sections their own way;
the data, optimisation, compute and output sections are the same trl arguments for both.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, ClassVar

from unifier import methods as method_table

from . import trl_config
from .base import Backend, PlanContext, RunResult, render_program
from .plan import Plan, ScriptProgram
from .ranks import check_ranks, launch, node_rank, torchrun_args

LIBRARY = Path(__file__).with_name("inline_library.py")
CALLBACKS = ("metrics", "health", "stop_on_signal", "scrub_secrets", "progress", "probe")


def trl_config_class(spec) -> tuple[str, str]:
    """(module, class) of the trl config dataclass the method's trainer takes (unifier/methods.py)."""
    module, _, name = method_table.method(spec.training.method).trl_config.partition(":")
    return module, name


class TrlBackend(Backend):
    program_module: ClassVar[str]  # e.g. "unifier.backends.peft_program"; its file is the printed script
    script_name: ClassVar[str]
    option_targets: ClassVar[dict[str, str]]  # backend_options group -> the CONFIG mapping it updates

    def option_names(self, spec, group):
        from .signatures import dataclass_fields

        if group == "trainer_args":
            return dataclass_fields(*trl_config_class(spec))
        return None

    def option_types(self, spec, group):
        from .signatures import dataclass_annotations

        if group != "trainer_args":
            return None
        return dataclass_annotations(*trl_config_class(spec))

    def translate_method(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.method_section(ctx)

    def translate_data(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.data_section(ctx)

    def translate_optimisation(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.optimisation_section(ctx)

    def translate_compute(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.compute_section(ctx)

    def translate_output(self, ctx: PlanContext) -> dict[str, Any]:
        return trl_config.output_section(ctx)

    def assemble(self, ctx: PlanContext, fragments: dict[str, Any]) -> Plan:
        config = trl_config.merge_fragments(fragments)
        for group, values in ctx.options(self.name).items():  # the escape hatch: verbatim, last
            target = config.get(self.option_targets[group])
            if isinstance(target, dict):
                target.update(values)
        program_file = Path(importlib.util.find_spec(self.program_module).origin)
        source = render_program(program_file, LIBRARY, config)
        program = ScriptProgram(
            entry=f"{self.program_module}:main",
            config=config,
            source=source,
            path=str(ctx.folder.native_program(self.script_name)),
            launcher=tuple(torchrun_args(ctx.spec.compute)) if ctx.multi_process else (),
        )
        callbacks = tuple(name for name in CALLBACKS if name != "probe" or ctx.spec.output.probe)
        callbacks += ("schedule",) if ctx.resume_from else ()
        after: tuple = ()
        if ctx.multi_process:  # torchrun's workers cannot reach the terminal: unifier draws their progress
            callbacks = (*(name for name in callbacks if name != "progress"), "rank_check")
            after = (check_ranks(ctx),)
        return Plan(
            backend=self.name,
            run_dir=str(ctx.folder.root),
            data_kind=ctx.data_kind,
            program=program,
            callbacks=callbacks,
            after_training=after,
            notes=self.notes(ctx, config),
            resume_from=ctx.resume_from,
            world_size=ctx.spec.compute.world_size,
        )

    def notes(self, ctx: PlanContext, config: dict) -> tuple[str, ...]:
        return target_module_notes(ctx)

    def run(self, plan: Plan) -> RunResult:
        from .hf_callbacks import build_callbacks

        program = plan.program
        assert isinstance(program, ScriptProgram)
        self.prepare_process(plan)
        module_name, function = program.entry.split(":")
        script = Path(program.path)
        if node_rank(program.launcher) == 0:  # other nodes of a multi-node run write nothing
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(plan.render(), encoding="utf-8")
        if not program.launcher:
            main = getattr(importlib.import_module(module_name), function)
            main(program.config, callbacks=build_callbacks(plan.callbacks, program.config["paths"]))
            return RunResult(native_command=f"python {script}", backend_details=self.details(plan))
        self.launch_ranks(plan)
        from .after_training import run_step

        details = {"process_mode": "subprocess (torchrun)", **self.details(plan)}
        for step in plan.after_training:
            details.update(run_step(step))
        return RunResult(native_command=" ".join(program.command()), backend_details=details)

    def launch_ranks(self, plan: Plan) -> None:
        """torchrun starts the program's processes on this node (backends/trl_worker.py builds the callbacks in
        each); unifier draws their progress from metrics.jsonl."""
        import json

        from unifier import terminal

        program = plan.program
        paths = program.config["paths"]
        entry = ["-m", "unifier.backends.trl_worker", program.entry, ",".join(plan.callbacks)]
        env = {"UNIFIER_PROGRAM_CONFIG": json.dumps(program.config)}
        steps = program.config["trainer_args"].get("max_steps", -1)
        with terminal.progress_from_metrics(Path(paths["metrics_file"]), steps if steps > 0 else None):
            launch(list(program.launcher), entry, env, paths["ranks_dir"])

    def prepare_process(self, plan: Plan) -> None:
        """Environment the program needs in unifier's own process (before its imports)."""

    def details(self, plan: Plan) -> dict[str, Any]:
        return {}


def target_module_notes(ctx: PlanContext) -> tuple[str, ...]:
    """The plan's header notes every backend shares: which weights load, what LoRA adapts."""
    weights = (ctx.prequantized.describe(),) if ctx.prequantized else ()
    if ctx.spec.adapter.type == "full":
        return weights
    if ctx.target_modules is None:
        return (
            *weights,
            "target_modules all-linear: resolved from the model's weight names when the run starts "
            "(they are not readable here)",
        )
    if ctx.spec.adapter.target_modules == "all-linear":
        all_linear = f"target_modules all-linear = {', '.join(ctx.target_modules)} (from {ctx.model.source})"
        return (*weights, all_linear)
    return weights
