"""The pipeline: recipe -> JobSpec -> checked backend -> normalized data -> Plan -> RunFolder -> run.

spec   = unifier.spec.load_spec(recipe)                  (unifier/spec/)
backend = checked_backend(spec)                          (backends/registry.py, backend.check)
data   = unifier.data.prepare_data(spec)                 (unifier/data/)
plan   = backend.plan(plan_context(...))                 (backends/<name>.py -> backends/plan.py)
folder = RunFolder(...): data, views, run.json            (unifier/runfolder.py)
result = backend.run(plan)                               (the native library, in or out of process)
"""

from __future__ import annotations

from pathlib import Path

from .data import PreparedData, planned_data_kind
from .environment import training_device
from .errors import BackendUnavailable, UserError
from .model_info import ModelInfo, fetch_hub_weight_shapes, read_model_info
from .runfolder import RunFolder
from .spec import JobSpec


def registry():
    from .backends import registry as backends_registry

    return backends_registry.active()


def get_backend(name: str):
    return registry().backend(name)


def choose_backend(spec: JobSpec, requested: str | None = None, *, here: bool = True):
    """Resolve 'auto': the first backend, in the registry's priority order for the device the job trains on (and
    for several processes: ms-swift first), whose check() passes. here=False judges only what each backend can ever do (not what this machine has
    installed): `unify plan` shows the plan for a recipe meant for another machine."""
    name = requested or spec.backend
    if name != "auto":
        return get_backend(name)
    device = (
        training_device(spec.compute.device) if here or spec.compute.device == "auto" else spec.compute.device
    )
    reasons = []
    for candidate in registry().auto_order(device, several=spec.compute.world_size > 1):
        backend = get_backend(candidate)
        problems = backend.check(spec, here=here)
        if not problems:
            return backend
        reasons.append(f"{candidate}: {problems[0]}")
    where = "here" if here else "(whatever is installed)"
    raise BackendUnavailable(
        f"no backend can run this spec {where}:\n  " + "\n  ".join(reasons),
        hint="`unify backends` shows what each backend supports",
    )


def checked_backend(spec: JobSpec, requested: str | None = None, *, here: bool = True):
    """The backend that runs the spec; BackendUnavailable (exit 2) lists everything that stands in the way."""
    model_problems(spec, read_model_info(spec.model.name_or_path, spec.model.revision))
    options_problems(spec)
    backend = choose_backend(spec, requested, here=here)
    problems = backend.check(spec, here=here)
    if problems:
        raise BackendUnavailable(
            f"backend '{backend.name}' cannot run this spec{' here' if here else ''}:\n  - "
            + "\n  - ".join(problems),
            hint="`unify backends` shows what each backend supports",
        )
    return backend


def options_problems(spec: JobSpec) -> None:
    """backend_options of every backend the recipe names, whichever backend runs it: a misspelt option is a
    mistake even when `auto` picks another backend."""
    from .backends.base import option_group_problems

    problems = [p for name in spec.backend_options for p in option_group_problems(spec, get_backend(name))]
    if problems:
        raise UserError(
            "; ".join(problems),
            hint="backend_options are passed verbatim: check the names against the library's documentation",
        )


def model_problems(spec: JobSpec, info: ModelInfo) -> None:
    """What the model folder says about the recipe, before any weight is loaded (UserError, exit 2)."""
    custom = info.custom_code()
    if custom and not spec.model.trust_remote_code:
        raise UserError(
            f"model.name_or_path '{spec.model.name_or_path}' brings its own Python code ({custom[0]}), "
            "and model.trust_remote_code is false",
            hint="set model.trust_remote_code: true only if you trust that code; unifier will not run it "
            "otherwise, on any backend",
        )
    if spec.model.chat_template == "tokenizer" and info.is_local and info.tokenizer_config is not None:
        has_template = (
            info.tokenizer_config.get("chat_template")
            or (Path(info.location) / "chat_template.jinja").is_file()
        )
        if not has_template:
            raise UserError(
                f"model.chat_template: tokenizer, but the tokenizer of {spec.model.name_or_path} has no "
                "chat template",
                hint="use chat_template: auto (unifier's ChatML for a model without a template), or a .jinja file",
            )
    if spec.adapter.type == "full":
        return
    targets = spec.adapter.target_modules
    if targets == "all-linear":
        if info.linear_modules() == []:
            raise UserError(
                f"adapter.target_modules all-linear: the model {spec.model.name_or_path} has no linear "
                "layers outside its embeddings and output head"
            )
        return
    missing = info.missing_targets(list(targets))
    if missing:
        known = ", ".join(info.linear_modules() or [])
        raise UserError(
            f"adapter.target_modules: {', '.join(missing)} match no module of {spec.model.name_or_path}",
            hint=f"its linear layers are: {known}" if known else None,
        )


def resolved_target_modules(spec: JobSpec, info: ModelInfo) -> tuple[str, ...] | None:
    targets = spec.adapter.target_modules
    if targets != "all-linear":
        return tuple(targets)
    linear = info.linear_modules()
    return tuple(linear) if linear is not None else None


def plan_context(
    spec: JobSpec,
    backend,
    folder: RunFolder,
    data_kind: str,
    *,
    info: ModelInfo | None = None,
    resume_from: str | None = None,
):
    from .backends.base import PlanContext
    from .prequantized import resolve as resolve_prequantized

    info = info or read_model_info(spec.model.name_or_path, spec.model.revision)
    return PlanContext(
        spec=spec,
        folder=folder,
        data_kind=data_kind,
        device=training_device(spec.compute.device),
        model=info,
        target_modules=resolved_target_modules(spec, info),
        resume_from=resume_from,
        prequantized=resolve_prequantized(spec, info),
    )


def run_folder(spec: JobSpec, backend: str, run_dir: str | Path | None = None) -> RunFolder:
    return RunFolder(
        Path(run_dir) if run_dir else Path(spec.output.dir.format(name=spec.name, backend=backend))
    )


def model_for_run(spec: JobSpec) -> ModelInfo:
    """The model's description for a run: like planning's, plus (for a hub model not in the cache) its weight
    names read over the network, so all-linear resolves before any weight is loaded."""
    info = read_model_info(spec.model.name_or_path, spec.model.revision)
    if (
        spec.adapter.type != "full"
        and spec.adapter.target_modules == "all-linear"
        and info.linear_modules() is None
    ):
        info = fetch_hub_weight_shapes(info, spec.model.revision)
        if info.linear_modules() is None:
            raise UserError(
                f"adapter.target_modules all-linear: the weight names of {spec.model.name_or_path} cannot "
                "be read before loading (no safetensors headers locally or on the hub)",
                hint="list the modules explicitly, e.g. adapter.target_modules: [q_proj, k_proj, v_proj, o_proj]",
            )
    return info


def plan(spec: JobSpec, backend: str | None = None, run_dir: str | None = None, data_kind: str | None = None):
    """A printable plan; no data is normalized, nothing is built or written, and the backend's packages need
    not be installed (a recipe for an 8-GPU node plans on a laptop)."""
    chosen = checked_backend(spec, backend, here=False)
    folder = run_folder(spec, chosen.name, run_dir)
    return chosen.plan(plan_context(spec, chosen, folder, data_kind or planned_data_kind(spec)))


def write_data(folder: RunFolder, data: PreparedData, the_plan, backend) -> None:
    """The canonical rows, their encoded tokens (what every backend trains) and the chat template, then every
    view the plan says the backend reads."""
    from .data.tokens import file_layouts, write_tokens

    data.write(folder)
    write_tokens(folder, data)
    for view in the_plan.data_views:
        rows = data.split(view.split)
        views = [
            backend.view_row(view.layout, rows[i], layout)
            for i, layout in zip(data.file_order(view.split), file_layouts(data, view.split))
        ]
        write_jsonl(Path(view.path), views)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(spec: JobSpec, backend: str | None = None, **kwargs):
    from .running import run as run_job

    return run_job(spec, backend, **kwargs)


def resume(run_dir, **kwargs):
    from .running import resume as resume_job

    return resume_job(run_dir, **kwargs)
