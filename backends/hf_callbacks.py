"""Trainer callbacks unifier attaches on every backend (imported only while training; the ms-swift plugin
wraps the same classes): metrics.jsonl, numerical health, stop-on-signal, secret scrubbing of checkpoints,
progress, the parity probe."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from unifier import methods, terminal

# the trainers' method-specific numbers kept in metrics.jsonl's extra (rewards/chosen, nll_loss, ...)
METHOD_METRICS = tuple(
    dict.fromkeys(prefix for entry in methods.METHODS.values() for prefix in entry.metric_prefixes)
)


class MetricsCallback(TrainerCallback):
    """One line per logging step in the schema every backend shares (see unifier.metrics)."""

    def __init__(self, path: str | Path, data_summary: str | Path | None = None):
        self.path = Path(path)  # unifier created (or, resuming, trimmed) it; every record is appended
        self.data_summary = Path(data_summary) if data_summary else None
        self.passes_in_file = 1
        self._last_time = None
        self._last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_step = state.global_step  # a resumed run starts at its checkpoint's step
        if self.data_summary is not None and self.data_summary.is_file():
            # data/train.jsonl holds several passes over the rows: the trainer's epoch counts files
            self.passes_in_file = json.loads(self.data_summary.read_text()).get("epochs_in_file", 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        from unifier.metrics import metrics_record

        logs = logs or {}
        if not state.is_world_process_zero or ("loss" not in logs and "eval_loss" not in logs):
            return  # every rank logs the same (gathered) numbers; the main process writes them
        now = time.perf_counter()
        steps = max(state.global_step - self._last_step, 1)
        step_time = (now - self._last_time) / steps if self._last_time and "loss" in logs else None
        record = metrics_record(
            step=state.global_step,
            epoch=state.epoch * self.passes_in_file if state.epoch is not None else None,
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            tokens_seen=getattr(state, "num_input_tokens_seen", None) or None,
            step_time=step_time,
            eval_loss=logs.get("eval_loss"),
            extra={
                methods.METRIC_ALIASES.get(k, k): v
                for k, v in logs.items()
                if k.startswith(METHOD_METRICS) or k in methods.METRIC_ALIASES
            },
        )
        if "loss" in logs:
            self._last_time, self._last_step = now, state.global_step
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stops (exit 1) instead of training on garbage."""


class HealthCallback(TrainerCallback):
    """Stops the run at the first logged non-finite loss or gradient norm, naming the step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = [
            key
            for key in ("loss", "grad_norm", "eval_loss")
            if isinstance((logs or {}).get(key), float) and not math.isfinite(logs[key])
        ]
        if bad:
            values = ", ".join(f"{key} {logs[key]}" for key in bad)
            raise TrainingDiverged(
                f"step {state.global_step}: {values}; the weights are no longer usable. "
                "Lower training.learning_rate (or set training.max_grad_norm), and check the data "
                "for empty or extreme rows"
            )


class StopOnSignalCallback(TrainerCallback):
    """SIGINT/SIGTERM (unifier.interrupts): at the next optimizer step, save a checkpoint and stop. With several
    processes the ranks agree first (one all-reduce of a flag per step), so all stop at the same step."""

    def __init__(self, stop_file: str | None):
        self.stop_file = stop_file

    def on_step_end(self, args, state, control, **kwargs):
        from unifier.interrupts import stop_requested

        if agreed(stop_requested(self.stop_file)):
            control.should_save = True
            control.should_training_stop = True
        return control


def agreed(flag: bool) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class ScrubSecretsCallback(TrainerCallback):
    """After each checkpoint save: no secret value (from the environment) stays in its files (training_args.bin
    pickles the trainer's arguments, a hub_token included)."""

    def on_save(self, args, state, control, **kwargs):
        from unifier.secrets import scrub_tree

        if state.is_world_process_zero:
            scrub_tree(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class CpuFourBitCallback(TrainerCallback):
    """bitsandbytes' CPU 4-bit layers repack their weights on the first no-grad forward in eval mode (an
    evaluation) into an inference-only layout; every training step after it then fails ("a view of a leaf
    Variable ... in-place operation") or, for layers without bias, computes wrong gradients. Turning the
    repacking off before training keeps QLoRA with evaluation correct on CPU (a no-op elsewhere)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from .inline_library import keep_cpu_4bit_trainable

        keep_cpu_4bit_trainable(model)


class RichProgressCallback(TrainerCallback):
    """One progress bar with the latest loss, instead of transformers' tqdm bar that prints every log dict."""

    replaces = (ProgressCallback, PrinterCallback)  # build_trainer removes these when this callback is given

    def __init__(self):
        self.progress = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = terminal.training_bar()
        self.task = self.progress.add_task("train", total=state.max_steps, loss="")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs:
            parts = [
                f"{key} {logs[key]:.4f}"
                for key in ("loss", "eval_loss")
                if isinstance(logs.get(key), (int, float))
            ]
            if parts:
                self.progress.update(self.task, loss=", ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class ProbeCallback(TrainerCallback):
    """output.probe: record the first samples and the initial trainable weights (see backends/probe.py)."""

    def __init__(self, folder: str | Path):
        self.folder = str(folder)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        from .probe import gathered_parameters, record_train_start

        # ZeRO-3: every rank takes part in gathering the weights whole; the main process records them
        with gathered_parameters([param for param in model.parameters() if param.requires_grad]):
            if state.is_world_process_zero:
                record_train_start(self.folder, model, train_dataloader)


class RankWeightsCallback(TrainerCallback):
    """Several processes: at the end every rank writes the digest of its trainable weights (backends/ranks.py),
    which unifier compares after training (one model trained together, not independent copies)."""

    def __init__(self, folder: str | Path):
        self.folder = str(folder)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        from .ranks import write_rank_record

        write_rank_record(self.folder, model, state.global_step)


class ResumedScheduleCallback(TrainerCallback):
    """A resumed run steps at the learning rate its schedule gives that step. transformers restores the
    optimizer's saved learning rate and applies the (rebuilt) schedule only after the first step, so a run resumed
    with a raised max_steps would take its first step at the old schedule's end (0 for linear and cosine). For
    an unchanged schedule this writes the same value the optimizer already holds (bit-exact resume is kept)."""

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        from torch.optim.lr_scheduler import LambdaLR

        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper
        if optimizer is None or not isinstance(scheduler, LambdaLR) or state.global_step == 0:
            return
        step = scheduler.last_epoch
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(step)


CALLBACK_FACTORIES = {
    "metrics": lambda paths: MetricsCallback(paths["metrics_file"], paths["data_summary"]),
    "health": lambda paths: HealthCallback(),
    "stop_on_signal": lambda paths: StopOnSignalCallback(paths["stop_file"]),
    "scrub_secrets": lambda paths: ScrubSecretsCallback(),
    "cpu_4bit": lambda paths: CpuFourBitCallback(),
    "progress": lambda paths: RichProgressCallback(),
    "probe": lambda paths: ProbeCallback(paths["probe_dir"]),
    "schedule": lambda paths: ResumedScheduleCallback(),
    "rank_check": lambda paths: RankWeightsCallback(paths["ranks_dir"]),
}


def build_callbacks(names: tuple[str, ...], paths: dict[str, str]) -> list[TrainerCallback]:
    """The callbacks a plan names, built on the run folder's paths (the plan's CONFIG carries them)."""
    return [CALLBACK_FACTORIES[name](paths) for name in names]
