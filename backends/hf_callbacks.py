"""Trainer callbacks unifier attaches on every backend (imported only while training): metrics.jsonl,
progress, the parity probe."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class MetricsCallback(TrainerCallback):
    """One line per logging step in the schema every backend shares (see unifier.metrics)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._last_time = None
        self._last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        from unifier.metrics import metrics_record

        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return
        now = time.perf_counter()
        steps = max(state.global_step - self._last_step, 1)
        step_time = (now - self._last_time) / steps if self._last_time and "loss" in logs else None
        record = metrics_record(
            step=state.global_step,
            epoch=state.epoch,
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            tokens_seen=getattr(state, "num_input_tokens_seen", None) or None,
            step_time=step_time,
            eval_loss=logs.get("eval_loss"),
            extra={k: v for k, v in logs.items() if k.startswith("rewards/")},
        )
        if "loss" in logs:
            self._last_time, self._last_step = now, state.global_step
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class RichProgressCallback(TrainerCallback):
    """One progress bar with the latest loss, instead of transformers' tqdm bar that prints every log dict."""

    replaces = (ProgressCallback, PrinterCallback)  # build_trainer removes these when this callback is given

    def __init__(self):
        self.progress = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
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
        from .probe import record_train_start

        record_train_start(self.folder, model, train_dataloader)


CALLBACK_FACTORIES = {
    "metrics": lambda paths: MetricsCallback(paths["metrics_file"]),
    "progress": lambda paths: RichProgressCallback(),
    "probe": lambda paths: ProbeCallback(paths["probe_dir"]),
}


def build_callbacks(names: tuple[str, ...], paths: dict[str, str]) -> list[TrainerCallback]:
    """The callbacks a plan names, built on the run folder's paths (the plan's CONFIG carries them)."""
    return [CALLBACK_FACTORIES[name](paths) for name in names]
