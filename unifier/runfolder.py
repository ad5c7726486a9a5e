"""The run folder every backend writes, and the one object that owns its layout.

    <run folder>/
      run.json        what ran and how it ended (unifier/record.py writes it)
      metrics.jsonl   one line per logging step, one schema for every backend
      run.log         everything third-party libraries printed
      run.sh          (unify prepare / plan --write) the native program with this installation's tools
      loss.png        the loss curve
      data/           the normalized rows, their encoded tokens (what every backend trains), the chat template,
                      and backend views of them
      checkpoints/    checkpoint-<step>/ (resumable), the trainer's own outputs
      adapter/        the PEFT adapter + tokenizer   (model/ for full fine-tuning; merged/ when asked)
      logs/           output.report_to: the trackers' local files (logs/tensorboard, logs/wandb, ...)
      native/         the printed native program, and backend-specific records (rank digests)
      probe/          with output.probe: what the trainer really trained on

Every module, the ms-swift plugin and the printed programs (through their CONFIG) take paths from a
RunFolder; nothing else joins path names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from .errors import UserError
from .secrets import redact

RUN_JSON = "run.json"
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    LOCK_NAME: ClassVar[str] = ".unifier.lock"
    # every entry unifier writes: the only ones an overwrite deletes (anything else in the folder stays)
    OWNED: ClassVar[tuple[str, ...]] = (
        "run.json",
        "run.json.tmp",
        "metrics.jsonl",
        "run.log",
        "run.sh",
        "loss.png",
        ".unifier.lock",
        ".unifier-stop",
        "data",
        "checkpoints",
        "adapter",
        "model",
        "merged",
        "native",
        "logs",
        "probe",
        "eval",
        ".eval.partial",
        "export",
    )

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).absolute())

    # ---- records ----
    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def run_script(self) -> Path:
        return self.root / "run.sh"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK_NAME

    @property
    def stop_request(self) -> Path:
        """Written on SIGINT/SIGTERM; training processes unifier started out of process stop when they see it."""
        return self.root / ".unifier-stop"

    # ---- data ----
    @property
    def data(self) -> Path:
        return self.root / "data"

    def data_file(self, split: str) -> Path:
        return self.data / f"{split}.jsonl"

    def view_file(self, split: str, layout: str) -> Path:
        """A backend's view of the canonical rows (e.g. train.swift.jsonl)."""
        return self.data / f"{split}.{layout}.jsonl"

    @property
    def data_summary(self) -> Path:
        return self.data / "summary.json"

    def tokens_file(self, split: str) -> Path:
        """The encoded rows every backend trains (unifier/data/encode.py), in data/<split>.jsonl's order."""
        return self.data / f"{split}.tokens.jsonl"

    @property
    def tokens_summary(self) -> Path:
        """What the encoded rows depend on (template, tokenizer, data, max length) and their statistics."""
        return self.data / "tokens.json"

    @property
    def chat_template(self) -> Path:
        """The chat template the run trained with; chat, eval and export render with it."""
        return self.data / "chat_template.jinja"

    # ---- training ----
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step}"

    def checkpoint_dirs(self) -> list[Path]:
        """checkpoint-<step> folders, oldest first (complete or not: see unifier.ownership)."""
        if not self.checkpoints.is_dir():
            return []
        found = [
            p
            for p in self.checkpoints.iterdir()
            if p.is_dir()
            and p.name.startswith(CHECKPOINT_PREFIX)
            and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def native(self) -> Path:
        return self.root / "native"

    @property
    def ranks(self) -> Path:
        return self.native / "ranks"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def native_program(self, filename: str) -> Path:
        return self.native / filename

    # ---- after training ----
    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    def export(self, fmt: str) -> Path:
        return self.root / "export" / fmt

    def paths(self) -> dict[str, str]:
        """The paths a training program needs, for its CONFIG (printed programs get them as values)."""
        return {
            "run_dir": str(self.root),
            "train_file": str(self.tokens_file("train")),
            "eval_file": str(self.tokens_file("eval")),
            "checkpoints": str(self.checkpoints),
            "adapter_dir": str(self.adapter),
            "model_dir": str(self.model),
            "merged_dir": str(self.merged),
            "metrics_file": str(self.metrics),
            "probe_dir": str(self.probe),
            "ranks_dir": str(self.ranks),
            "stop_file": str(self.stop_request),
            "data_summary": str(self.data_summary),
        }

    # ---- run.json ----
    def write_record(self, record: dict[str, Any]) -> None:
        """Atomically replace run.json (redacted; non-finite numbers as null, so it stays valid JSON)."""
        tmp = self.run_json.with_name(RUN_JSON + ".tmp")
        body = {"written_by": "unifier", **finite(redact(record))}
        tmp.write_text(json.dumps(body, indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(self.run_json)

    def read_record(self) -> dict[str, Any]:
        if not self.run_json.is_file():
            raise UserError(
                f"{self.root}: not a run folder (no {RUN_JSON})", hint="give a folder written by `unify run`"
            )
        try:
            record = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.run_json}: not readable ({exc})") from None
        if not isinstance(record, dict) or record.get("written_by") != "unifier":
            raise UserError(f"{self.run_json}: not a unifier run record")
        return record


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def finite(value: Any) -> Any:
    """NaN and infinities become None (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def read_run(folder: str | Path) -> dict[str, Any]:
    return RunFolder(Path(folder)).read_record()


def scratch_folder(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new temporary folder beside its final place (renamed there when complete), with the permissions an
    ordinary folder gets (tempfile makes it private: 0700, and a serving process of another user could not read
    the export or eval once renamed)."""
    import os
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path
