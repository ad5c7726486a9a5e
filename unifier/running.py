"""A run's life: claim the folder, write data and run.json, train, record how it ended; resume a stopped one.

run(spec)        checks, data, plan (all before anything is written), then the folder (unifier.ownership,
                 one writer: unifier.runlock), then the backend's run(plan) under signal handling
                 (unifier.interrupts), then run.json: completed / failed / interrupted
resume(folder)   the same from the newest complete checkpoint, after checking that the recipe and the
                 data are the checkpoint's (a few settings may change with force=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import builtin, terminal
from .core import checked_backend, get_backend, model_for_run, plan_context, run_folder, write_data
from .data import PreparedData, prepare_data
from .environment import host_info, library_versions, peak_memory_mb
from .errors import TrainingFailed, UserError
from .interrupts import Interrupted, StopAtOnce, handling_signals, requested
from .metrics import read_metrics, train_losses
from .ownership import RESUMABLE_STATUSES, claim_folder, newest_checkpoint
from .runfolder import RunFolder, now
from .runlock import RunLock
from .secrets import SECRET_VARIABLES_ENV, referenced_variables, scrub_tree
from .spec import JobSpec, apply_overrides, spec_from_dict

# what `resume --force` may change: more (or fewer) steps, and what is saved at the end
RESUMABLE_CHANGES = ("training.max_steps", "training.epochs", "output.save")
NOT_COMPARED = ("output.if_exists", "eval")  # neither changes what training does
NODE_WAIT_S = float(os.environ.get("UNIFIER_NODE_WAIT_S", "600"))


@dataclass
class RunOutcome:
    run_dir: Path
    backend: str
    status: str
    metrics: list[dict[str, Any]]

    @property
    def losses(self) -> list[float]:
        return [loss for _, loss in train_losses(self.metrics)]


@dataclass
class Job:
    spec: JobSpec
    backend: Any
    data: PreparedData
    folder: RunFolder
    plan: Any
    record: dict[str, Any] = field(default_factory=dict)
    token_summary: dict[str, Any] | None = None  # the token checks' numbers, recorded in run.json


def run(
    spec: JobSpec,
    backend: str | None = None,
    *,
    recipe: str | None = None,
    quiet: bool = False,
    resume: bool = False,
    discard_checkpoints: bool = False,
) -> RunOutcome:
    """Train the spec. User mistakes raise UserError (exit 2) before anything is written; a training failure
    raises TrainingFailed (exit 1) and a signal Interrupted (exit 130/143), both recorded in run.json.
    resume=True continues the run folder's run when it holds one (and starts one when it is empty)."""
    chosen = checked_backend(spec, backend)
    folder = run_folder(spec, chosen.name)
    if resume and _holds_a_run(folder):
        return globals()["resume"](folder.root, spec=spec, quiet=quiet, recipe=recipe)
    job = _planned_job(spec, chosen, folder, quiet=quiet)
    if spec.compute.node_rank > 0:
        return _follow_node0(job)
    lock = claim_folder(
        folder, spec, if_exists=spec.output.if_exists, recipe=recipe, discard_checkpoints=discard_checkpoints
    )
    try:
        terminal.log_to(folder.log)
        write_data(folder, job.data, job.plan, chosen)
        folder.metrics.write_text("")
        builtin.ensure_model(spec.model.name_or_path)
        job.record = {**_new_record(job, "running", recipe), "pid": os.getpid()}
        return _execute(job)
    finally:
        lock.release()


def prepare(spec: JobSpec, backend: str | None = None, *, recipe: str | None = None, quiet: bool = False):
    """Everything `run` does before training, and nothing after: the checks, the run folder with the data and
    the backend's views, the native program in native/ and run.sh next to it, and run.json ("prepared"), so
    the printed command or script runs as is (`bash RUN_DIR/run.sh`). Returns the folder and the plan."""
    chosen = checked_backend(spec, backend)
    folder = run_folder(spec, chosen.name)
    job = _planned_job(spec, chosen, folder, quiet=quiet)
    the_plan = job.plan
    lock = claim_folder(folder, spec, if_exists=spec.output.if_exists, recipe=recipe)
    try:
        terminal.log_to(folder.log)
        write_data(folder, job.data, the_plan, chosen)
        builtin.ensure_model(spec.model.name_or_path)
        program = Path(the_plan.program.path)
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(the_plan.render(), encoding="utf-8")
        folder.run_script.write_text(run_script(the_plan), encoding="utf-8")
        folder.run_script.chmod(0o755)
        folder.write_record(_new_record(job, "prepared", recipe))
    finally:
        lock.release()
    return folder, the_plan


def _planned_job(
    spec: JobSpec, chosen, folder: RunFolder, *, quiet: bool, resume_from=None, resumed: bool = False
) -> Job:
    """Every check and the plan, before anything is written: secrets, data, the model folder, tokens. The one
    planning step of run, prepare and resume (resumed=True: the data and tokens must be the checkpoints')."""
    from .evaluation import check_retain_sources

    _check_secret_variables(spec)
    check_retain_sources(spec)
    data = prepare_data(spec, progress=not quiet)
    if resumed:
        _check_same_data(folder, data)
    info = model_for_run(spec)
    token_summary = _checked_tokens(spec, data, info)
    if resumed:
        _check_same_tokens(folder, data)
    context = plan_context(
        spec, chosen, folder, data.kind, info=info, resume_from=str(resume_from.path) if resume_from else None
    )
    return Job(
        spec=spec,
        backend=chosen,
        data=data,
        folder=folder,
        plan=chosen.plan(context),
        token_summary=token_summary,
    )


def _check_same_data(folder: RunFolder, data: PreparedData) -> None:
    recorded = (folder.read_record().get("data") or {}).get("fingerprint")
    if recorded and data.fingerprint() != recorded:
        raise UserError(
            f"{folder.root}: the training data differ from the data the checkpoints were trained on",
            hint="resume with the data of the original run, or start a new run in another output.dir",
        )


def _new_record(job: Job, status: str, recipe: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "backend": job.backend.name,
        "recipe": recipe,
        "started": now(),
        "spec": job.spec.model_dump(mode="json"),
        "data": {**job.data.summary(), "tokens": job.token_summary},
        "plan": job.plan.to_json(),
        "versions": library_versions(),
        "host": host_info(),
    }


def run_script(the_plan) -> str:
    """run.sh: the native program with this installation's Python and tools first on PATH."""
    import shlex
    import sys

    from .backends.plan import ScriptProgram

    program = the_plan.program
    command = program.command() if isinstance(program, ScriptProgram) else ["bash", program.path]
    steps = "".join(
        f"#   {line[2:]}\n" for line in the_plan.render().splitlines() if line.startswith("# then unifier")
    )
    return (
        "#!/usr/bin/env bash\n"
        "# written by `unify prepare` / `unify plan --write`: the backend's own program, without unifier around it\n"
        + (f"# what `unify run` does after it (not done here):\n{steps}" if steps else "")
        + "set -euo pipefail\n"
        + f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"\n'
        + f'exec {" ".join(shlex.quote(part) for part in command)} "$@"\n'
    )


def resume(
    run_dir: str | Path,
    *,
    spec: JobSpec | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    quiet: bool = False,
    recipe: str | None = None,
) -> RunOutcome:
    """Continue a run from its newest complete checkpoint (from the start if it saved none)."""
    folder = RunFolder(Path(run_dir))
    record = folder.read_record()
    recorded = record["spec"]
    if spec is None:
        spec = spec_from_dict(apply_overrides(recorded, overrides or []), source=f"{folder.run_json} (spec)")
    changes = spec_changes(recorded, spec.model_dump(mode="json"))
    _check_changes(folder, record, changes, force)
    chosen = checked_backend(spec, record["backend"])
    lock = RunLock(folder.lock).acquire()
    try:
        record = folder.read_record()  # under the lock: the state another process may just have left
        checkpoint = newest_checkpoint(folder)
        _check_steps_left(folder, spec, checkpoint)
        step = checkpoint.step if checkpoint else 0
        job = _planned_job(spec, chosen, folder, quiet=quiet, resume_from=checkpoint, resumed=True)
        data, the_plan, token_summary = job.data, job.plan, job.token_summary
        terminal.log_to(folder.log)
        write_data(folder, data, the_plan, chosen)
        _keep_metrics_up_to(folder, step, checkpoint.path if checkpoint else None)
        builtin.ensure_model(spec.model.name_or_path)
        for stale in ("ended", "error", "traceback", "interrupted", "final_metrics", "wall_time_s"):
            record.pop(stale, None)
        record.update(
            status="running",
            spec=spec.model_dump(mode="json"),
            plan=the_plan.to_json(),
            versions=library_versions(),
            host=host_info(),
            pid=os.getpid(),
            data={**data.summary(), "tokens": token_summary},
        )
        record.setdefault("resumes", []).append(
            {
                "started": now(),
                "from_step": step,
                "from_checkpoint": str(checkpoint.path) if checkpoint else None,
                "changes": [f"{path}: {old!r} -> {new!r}" for path, old, new in changes],
            }
        )
        job.record = record
        return _execute(job)
    finally:
        lock.release()


def _checked_tokens(spec: JobSpec, data: PreparedData, info) -> dict | None:
    """Refuse data that cannot train (UserError), report what trains badly; the statistics for run.json."""
    import logging

    from .data.tokens import check_trainable

    if spec.model.name_or_path == builtin.TINY_MODEL_REF:
        builtin.ensure_model(spec.model.name_or_path)  # its tokenizer is built with it
        info = model_for_run(spec)
    stats, note = check_trainable(spec, data, info, exact=True)
    if stats is None:
        raise UserError(
            f"unifier encodes the rows with the model's tokenizer before training, and {note}",
            hint="give a local model folder with tokenizer.json, or make the hub model reachable",
        )
    for warning in data.warnings:
        logging.getLogger("unifier").warning(warning)
    return stats.summary()


def _check_same_tokens(folder: RunFolder, data: PreparedData) -> None:
    """A resumed run trains the tokens its checkpoints were trained on: the same template and tokenizer."""
    try:
        recorded = json.loads(folder.tokens_summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a run folder written before unifier recorded its tokens
    now = data.encoder.fingerprint()
    changed = [key for key in ("chat_template", "tokenizer") if recorded.get(key) != now[key]]
    if changed:
        raise UserError(
            f"{folder.root}: the {' and the '.join(c.replace('_', ' ') for c in changed)} differ from the ones the "
            "checkpoints were trained with, so the rows would be other tokens",
            hint="resume with the original model folder and chat template, or start a new run",
        )


def spec_changes(before: dict, after: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf-by-leaf differences between two spec dumps: (dotted path, old, new)."""
    changes = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if path in NOT_COMPARED:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes += spec_changes(old, new, path + ".")
        elif old != new:
            changes.append((path, old, new))
    return changes


def _check_changes(folder: RunFolder, record: dict, changes: list, force: bool) -> None:
    status = record.get("status")
    listed = "; ".join(f"{path}: {old!r} -> {new!r}" for path, old, new in changes)
    if changes and not force:
        raise UserError(
            f"{folder.root}: the recipe differs from the one its checkpoints were trained with: {listed}",
            hint=f"resume with the original recipe; --force allows changing {', '.join(RESUMABLE_CHANGES)}",
        )
    locked = [path for path, _, _ in changes if path not in RESUMABLE_CHANGES]
    if locked:
        raise UserError(
            f"{folder.root}: cannot change on resume: "
            + "; ".join(f"{p}: {o!r} -> {n!r}" for p, o, n in changes if p in locked),
            hint=f"only {', '.join(RESUMABLE_CHANGES)} may change (with --force); start a new run otherwise",
        )
    if status == "completed" and not changes:
        raise UserError(
            f"{folder.root}: the run already completed; there is nothing to resume",
            hint="train longer with `unify resume DIR --force --set training.max_steps=N`",
        )
    if status not in (*RESUMABLE_STATUSES, "completed"):
        raise UserError(f"{folder.root}: run status '{status}' cannot be resumed")


def _holds_a_run(folder: RunFolder) -> bool:
    try:
        folder.read_record()
    except UserError:
        return False
    return True


def _check_secret_variables(spec: JobSpec) -> None:
    names = sorted(referenced_variables(spec.model_dump(mode="json")))
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise UserError(
            f"the recipe refers to environment variable{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (as ${{NAME}}), which {'are' if len(missing) > 1 else 'is'} not set",
            hint=f"export {missing[0]}=... before running",
        )
    os.environ[SECRET_VARIABLES_ENV] = ",".join(names)  # so every process scrubs their values from its files


def _check_steps_left(folder: RunFolder, spec: JobSpec, checkpoint) -> None:
    """A checkpoint at the run's last step leaves nothing to train: the trainer would still take one more step
    (transformers checks max_steps after a step), so resuming it is refused, not run past max_steps."""
    if checkpoint is None:
        return
    state = _trainer_state(checkpoint.path)
    planned = state.get("max_steps")
    if not isinstance(planned, int) or planned <= 0 or checkpoint.step < planned:
        return
    asked = spec.training.max_steps
    if asked is not None and asked > checkpoint.step:
        return  # a raised training.max_steps (resume --set) trains the steps up to it
    raise UserError(
        f"{folder.root}: {checkpoint.path.name} is the run's last step ({planned} of {planned}): nothing is left "
        "to train, and resuming would train past it",
        hint=f"to train further, raise the step count: unify resume {folder.root} --force --set training.max_steps=N "
        f"(N > {checkpoint.step}); the trained adapter is in {checkpoint.path}",
    )


def _trainer_state(checkpoint: Path) -> dict:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _keep_metrics_up_to(folder: RunFolder, step: int, checkpoint: Path | None = None) -> None:
    """A resumed run logs each step once: drop what was logged after the checkpoint it continues from. Steps the
    checkpoint's trainer logged that metrics.jsonl lacks (a prepared folder trained by run.sh, without unifier's
    callbacks) are taken from its trainer_state.json, so metrics.jsonl holds every step."""
    kept = [m for m in read_metrics(folder.metrics) if m.get("step", 0) <= step]
    if checkpoint is not None and not kept:
        passes = 1
        with contextlib.suppress(OSError, ValueError):
            passes = json.loads(folder.data_summary.read_text(encoding="utf-8")).get("epochs_in_file", 1)
        for entry in _trainer_state(checkpoint).get("log_history", []):
            if "loss" in entry and isinstance(entry.get("step"), int) and entry["step"] <= step:
                epoch = entry.get("epoch")
                kept.append(
                    {
                        "step": entry["step"],
                        "epoch": epoch * passes if isinstance(epoch, (int, float)) else None,
                        "loss": entry.get("loss"),
                        "learning_rate": entry.get("learning_rate"),
                        "grad_norm": entry.get("grad_norm"),
                        "from": "trainer_state.json",
                    }
                )
    folder.metrics.write_text("".join(json.dumps(m) + "\n" for m in kept), encoding="utf-8")


def _execute(job: Job) -> RunOutcome:
    folder, record = job.folder, job.record
    folder.stop_request.unlink(missing_ok=True)
    folder.write_record(record)
    started = time.perf_counter()
    result = None
    try:
        with handling_signals(folder.stop_request):
            try:
                result = job.backend.run(job.plan)
            except StopAtOnce as stop:
                _record_interrupted(job, stop.signum, at_once=True)
            except UserError:
                record.update(status="failed", ended=now(), error="user error (see message)")
                raise
            except BaseException as exc:
                if requested() is not None:  # the training processes ended on the signal
                    _record_interrupted(job, requested(), at_once=False)
                message = f"{type(exc).__name__}: {exc}{_divergence(folder)}"
                record.update(
                    status="failed", ended=now(), error=message, traceback=traceback.format_exc(limit=20)
                )
                if getattr(exc, "failures", None):  # a multi-process run: which rank failed, and how
                    record["failed_ranks"] = exc.failures
                raise TrainingFailed(
                    f"{job.backend.name} training failed: {message} (details in {folder.run_json})"
                ) from exc
            if requested() is not None:
                _record_interrupted(job, requested(), at_once=False, result=result)
    except BaseException:
        _finish(folder, record)
        raise
    metrics = read_metrics(folder.metrics)
    losses = train_losses(metrics)
    record.update(
        status="completed",
        ended=now(),
        wall_time_s=round(time.perf_counter() - started, 3),
        native_command=result.native_command,
        backend_details=result.backend_details,
        final_metrics={
            "steps": losses[-1][0] if losses else 0,
            "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None,
            "tokens_seen": next((m["tokens_seen"] for m in reversed(metrics) if m.get("tokens_seen")), None),
            "peak_memory_mb": peak_memory_mb(),
        },
    )
    from .plots import plot_run_loss

    plot_run_loss(folder, f"{job.spec.name} ({job.backend.name})")
    record["outputs"] = sorted(p.name for p in folder.root.iterdir() if not p.name.startswith("."))
    _finish(folder, record)
    if job.spec.eval.after_training:
        record["eval"] = _evaluate_after_training(job)
        record["outputs"] = sorted(p.name for p in folder.root.iterdir() if not p.name.startswith("."))
        _finish(folder, record)
    return RunOutcome(run_dir=folder.root, backend=job.backend.name, status="completed", metrics=metrics)


def _evaluate_after_training(job: Job) -> dict[str, Any]:
    """eval.after_training: `unify eval` on the completed run; its summary for run.json. A failure is a warning:
    the trained model is there either way."""
    import logging

    from .evaluation import evaluate

    e = job.spec.eval
    try:
        report = evaluate(
            job.folder.root,
            lock=False,  # `unify run` holds the folder's lock
            retain=e.retain or None,
            samples=e.samples,
            max_retain_increase=e.max_retain_increase,
        )
    except Exception as exc:
        message = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        logging.getLogger("unifier").warning(f"eval.after_training failed: {message}")
        return {"error": message}
    summary: dict[str, Any] = {"folder": str(job.folder.evaluation)}
    for name in ("task", "retain"):
        if name in report:
            summary[name] = {which: report[name][which]["loss"] for which in ("base", "tuned")}
    if "rewards" in report:
        summary["reward"] = {which: report["rewards"][which]["reward"] for which in ("base", "tuned")}
    if "pairs" in report:
        summary["pair_accuracy"] = report["pairs"]["tuned"]["pair_accuracy"]
    if "retain" in report:
        summary["forgetting"] = report["retain"]["forgetting"]
        if report["retain"]["forgetting"]:
            logging.getLogger("unifier").warning(
                f"forgetting: the retain loss rose {report['retain']['relative_increase']:.1%} "
                f"(more than eval.max_retain_increase {e.max_retain_increase:.0%})"
            )
    return summary


def _divergence(folder: RunFolder) -> str:
    """For a training process that died on a non-finite loss: the step, from metrics.jsonl."""
    bad = [m for m in read_metrics(folder.metrics) if m.get("nonfinite")]
    if not bad or "step" in str(bad[0]):
        return ""
    return (
        f" (step {bad[0]['step']}: {', '.join(bad[0]['nonfinite'])} not finite; lower training.learning_rate "
        "or check the data)"
    )


def _record_interrupted(job: Job, signum: int, *, at_once: bool, result=None) -> None:
    import signal

    folder, record = job.folder, job.record
    checkpoint = newest_checkpoint(folder)
    losses = train_losses(read_metrics(folder.metrics))
    record.update(
        status="interrupted",
        ended=now(),
        interrupted={
            "signal": signal.Signals(signum).name,
            "last_logged_step": losses[-1][0] if losses else 0,
            "checkpoint": str(checkpoint.path) if checkpoint else None,
            "checkpoint_step": checkpoint.step if checkpoint else None,
            "stopped": "at once (second signal)"
            if at_once
            else "at a step boundary, after saving a checkpoint",
            "resume_command": f"unify resume {folder.root}",
        },
    )
    if result is not None:
        record.update(native_command=result.native_command, backend_details=result.backend_details)
    raise Interrupted(
        signum, folder.root, checkpoint.step if checkpoint else None, checkpoint is not None, at_once=at_once
    )


def _finish(folder: RunFolder, record: dict) -> None:
    """run.json, and no secret value left in any file of the folder."""
    folder.write_record(record)
    scrub_tree(folder.root)


def _follow_node0(job: Job) -> RunOutcome:
    """node_rank > 0 of a multi-node run: node 0 owns the (shared) run folder; this node waits for it to be
    prepared with the same data, then starts its processes. It writes nothing into the folder."""
    folder = job.folder
    deadline = time.monotonic() + NODE_WAIT_S
    fingerprint = job.data.fingerprint()
    while True:
        try:
            record = folder.read_record()
        except UserError:
            record = None
        if record and record.get("status") == "running":
            if (record.get("data") or {}).get("fingerprint") != fingerprint:
                raise UserError(
                    f"{folder.root}: node 0 prepared different training data than this node "
                    f"(node_rank {job.spec.compute.node_rank})",
                    hint="give every node the same data",
                )
            break
        if time.monotonic() > deadline:
            raise UserError(
                f"{folder.root}: node 0 has not prepared the run folder after {NODE_WAIT_S:.0f} s",
                hint="start node 0 too; output.dir must be on a filesystem every node shares "
                "(UNIFIER_NODE_WAIT_S sets the wait)",
            )
        time.sleep(1.0)
    follower = dataclasses.replace(job.plan, after_training=())
    with handling_signals(folder.stop_request):
        get_backend(job.backend.name).run(follower)
    return RunOutcome(
        run_dir=folder.root,
        backend=job.backend.name,
        status=f"completed (node {job.spec.compute.node_rank})",
        metrics=[],
    )
