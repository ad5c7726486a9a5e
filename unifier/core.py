"""The pipeline: spec -> checked backend -> normalized data -> plan -> run folder."""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import PreparedData, prepare_data
from .errors import BackendUnavailable, TrainingFailed, UserError
from .metrics import read_metrics, train_losses
from .runfolder import host_info, library_versions, now, output_dir, prepare_folder, write_run_json
from .spec import JobSpec
from .tiny import TINY_MODEL_REF


@dataclass
class RunOutcome:
    run_dir: Path
    backend: str
    status: str
    metrics: list[dict[str, Any]]

    @property
    def losses(self) -> list[float]:
        return [loss for _, loss in train_losses(self.metrics)]


def get_backend(name: str):
    from .backends import get_backend as lookup

    return lookup(name)


def choose_backend(spec: JobSpec, requested: str | None = None, *, here: bool = True):
    """Resolve 'auto': multi-process -> swift; one CUDA process -> unsloth; otherwise peft. First that passes check().

    here=False judges only what each backend can do (not what this machine has installed): `unify plan`
    shows the plan for a recipe meant for another machine."""
    name = requested or spec.backend
    if name != "auto":
        return get_backend(name)
    from .backends.hf_args import device_is_cpu

    if spec.compute.world_size > 1:
        order = ["swift"]
    elif not device_is_cpu(spec):
        order = ["unsloth", "peft", "swift"]
    else:
        order = ["peft", "unsloth", "swift"]
    reasons = []
    for candidate in order:
        backend = get_backend(candidate)
        problems = backend.check(spec, here=here)
        if not problems:
            return backend
        reasons.append(f"{candidate}: {problems[0]}")
    where = "here" if here else "(whatever is installed)"
    raise BackendUnavailable(f"no backend can run this spec {where}:\n  " + "\n  ".join(reasons),
                             hint="`unify backends` shows what each backend supports")


def checked_backend(spec: JobSpec, requested: str | None = None, *, here: bool = True):
    """The backend that runs the spec; BackendUnavailable (exit 2) lists everything that stands in the way."""
    backend = choose_backend(spec, requested, here=here)
    problems = backend.check(spec, here=here)
    if problems:
        raise BackendUnavailable(f"backend '{backend.name}' cannot run this spec{' here' if here else ''}:\n  - "
                                 + "\n  - ".join(problems), hint="`unify backends` shows what each backend supports")
    return backend


def plan(spec: JobSpec, backend: str | None = None, run_dir: str | None = None, data_kind: str | None = None):
    """A printable plan; no data is normalized, nothing is built or written, and the backend's packages need
    not be installed (a recipe for an 8-GPU node plans on a laptop)."""
    from .data import planned_data_kind

    chosen = checked_backend(spec, backend, here=False)
    directory = str(Path(run_dir or output_dir(spec, chosen.name)).absolute())
    return chosen.plan(spec, directory, data_kind=data_kind or planned_data_kind(spec))


def run(spec: JobSpec, backend: str | None = None, *, recipe: str | None = None, quiet: bool = False) -> RunOutcome:
    """Check, normalize data, create the run folder, train, record. User mistakes raise UserError before any write."""
    chosen = checked_backend(spec, backend)
    data = prepare_data(spec, progress=not quiet)
    folder = output_dir(spec, chosen.name).absolute()
    the_plan = chosen.plan(spec, str(folder), data_kind=data.kind)  # may still refuse: before anything is written
    prepare_folder(folder, spec.output.if_exists)
    data.write(folder / "data")
    if spec.model.name_or_path == TINY_MODEL_REF:
        from .tiny import ensure_tiny_model

        ensure_tiny_model()
    record = _run_record(spec, chosen.name, recipe, data, the_plan)
    write_run_json(folder, record)
    started = time.perf_counter()
    try:
        result = chosen.run(the_plan, spec)
    except UserError:
        record.update(status="failed", ended=now(), error="user error (see message)")
        write_run_json(folder, record)
        raise
    except BaseException as exc:
        record.update(status="failed", ended=now(), error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=20))
        write_run_json(folder, record)
        raise TrainingFailed(f"{chosen.name} training failed: {type(exc).__name__}: {exc} (details in {folder / 'run.json'})") from exc
    metrics = read_metrics(folder / "metrics.jsonl")
    losses = train_losses(metrics)
    record.update(
        status="completed", ended=now(), wall_time_s=round(time.perf_counter() - started, 3),
        native_command=result.native_command, backend_details=result.backend_details,
        versions=library_versions(), host=host_info(),
        final_metrics={"steps": losses[-1][0] if losses else 0, "first_loss": losses[0][1] if losses else None,
                       "last_loss": losses[-1][1] if losses else None,
                       "tokens_seen": next((m["tokens_seen"] for m in reversed(metrics) if m.get("tokens_seen")), None),
                       "peak_memory_mb": _peak_memory_mb()},
        outputs=sorted(p.name for p in folder.iterdir()),
    )
    from .plots import plot_run_loss

    plot_run_loss(folder, f"{spec.name} ({chosen.name})")
    record["outputs"] = sorted(p.name for p in folder.iterdir())
    write_run_json(folder, record)
    return RunOutcome(run_dir=folder, backend=chosen.name, status="completed", metrics=metrics)


def _run_record(spec, backend, recipe, data: PreparedData, the_plan) -> dict[str, Any]:
    return {
        "status": "running", "backend": backend, "recipe": recipe, "started": now(),
        "spec": spec.model_dump(mode="json"), "data": {"kind": data.kind, "formats": data.formats,
                                                      "train_rows": len(data.train), "eval_rows": len(data.eval)},
        "plan": the_plan.to_json(), "versions": library_versions(), "host": host_info(), "pid": os.getpid(),
    }


def _peak_memory_mb() -> float | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB
    except Exception:
        return None
