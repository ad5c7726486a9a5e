"""The metrics.jsonl schema shared by every backend, and reading it back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_seen", "step_time", "eval_loss")


def metrics_record(
    *,
    step: int,
    epoch: float | None = None,
    loss: float | None = None,
    learning_rate: float | None = None,
    grad_norm: float | None = None,
    tokens_seen: int | None = None,
    step_time: float | None = None,
    eval_loss: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record = {
        "step": int(step),
        "epoch": _num(epoch),
        "loss": _num(loss),
        "learning_rate": _num(learning_rate),
        "grad_norm": _num(grad_norm),
        "tokens_seen": int(tokens_seen) if tokens_seen is not None else None,
        "step_time": _num(step_time),
    }
    if eval_loss is not None:
        record["eval_loss"] = _num(eval_loss)
    for key, value in (extra or {}).items():
        record[key] = _num(value)
    return with_nonfinite_flag(record)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_losses(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]


def eval_losses(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def with_nonfinite_flag(record: dict[str, Any]) -> dict[str, Any]:
    """NaN / infinite values become null (JSON has no spelling for them), named in `nonfinite`."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return record
    return {**{k: (None if k in bad else v) for k, v in record.items()}, "nonfinite": bad}
