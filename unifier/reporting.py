"""`output.report_to`: experiment trackers, the same for every backend (they all train on the HF Trainer).

Each tracker is the Trainer's own integration, told through its environment variable to keep its files in
the run folder's logs/ (tensorboard event files in logs/tensorboard, wandb's offline copy in logs/wandb...).
Light: no tracker is imported here, only looked up (`unify validate` refuses a missing one).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# tracker -> (the packages the Trainer accepts for it, pip name)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
}


def tracker_env(report_to: list[str] | tuple[str, ...], logs: Path) -> dict[str, str]:
    """The environment that puts each tracker's local files under the run folder's logs/."""
    env: dict[str, str] = {}
    if "tensorboard" in report_to:
        env["TENSORBOARD_LOGGING_DIR"] = str(logs / "tensorboard")
    if "wandb" in report_to:
        env["WANDB_DIR"] = str(logs)  # wandb writes logs/wandb/
    if "mlflow" in report_to:
        env["MLFLOW_TRACKING_URI"] = (logs / "mlflow").as_uri()
    if "swanlab" in report_to:
        env["SWANLAB_LOG_DIR"] = str(logs / "swanlab")
    if "trackio" in report_to:
        env["TRACKIO_DIR"] = str(logs / "trackio")
    return env


def missing_trackers(report_to: list[str] | tuple[str, ...]) -> list[str]:
    """Problems for trackers whose package is not installed (checked before anything loads)."""
    problems = []
    for name in report_to:
        modules, pip_name = TRACKERS[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            problems.append(
                f"output.report_to: {name} is not installed (pip install {pip_name}), or remove it from "
                "output.report_to"
            )
    return problems
