"""unifier: one fine-tuning recipe, translated for ms-swift, unsloth or transformers+peft+trl.

    import unifier
    spec = unifier.load_spec("recipes/tiny-cpu-sft.yaml", overrides=["training.max_steps=5"])
    print(unifier.plan(spec, backend="peft").render())
    outcome = unifier.run(spec, backend="peft")
    record = unifier.read_run(outcome.run_dir)
    print(unifier.generate(outcome.run_dir, "What is the capital of France?"))
    unifier.export(outcome.run_dir)  # RUN_DIR/export/merged

Nothing heavy (torch, transformers) is imported until a backend runs.
"""

from . import _source_tree
from .errors import BackendUnavailable, TrainingFailed, UserError
from .interrupts import Interrupted

_source_tree.find_backends()

__version__ = "0.1.0"
_FROM_SPEC = ("JobSpec", "load_spec", "spec_from_dict")


def __getattr__(name):
    """The spec names load on first use: building the pydantic models costs `unify --help` 0.2 s."""
    if name in _FROM_SPEC:
        from . import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'unifier' has no attribute {name!r}")


def plan(spec, backend=None, run_dir=None):
    from .core import plan as _plan

    return _plan(spec, backend, run_dir)


def run(spec, backend=None, **kwargs):
    from .core import run as _run

    return _run(spec, backend, **kwargs)


def resume(run_dir, **kwargs):
    """Continue a run folder from its newest complete checkpoint (see unifier.running.resume)."""
    from .core import resume as _resume

    return _resume(run_dir, **kwargs)


def read_run(folder):
    from .runfolder import read_run as _read

    return _read(folder)


def evaluate(run_dir, **kwargs):
    """Held-out loss/perplexity base vs tuned, a forgetting check (retain=[files]), samples; see unify eval."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def generate(run_dir, prompt, *, system=None, **settings):
    """One answer of a run's tuned model to a prompt (greedy unless temperature > 0); see unify chat."""
    from .trained import TrainedRun, load_model
    from .trained import generate as _generate

    model, tokenizer = load_model(TrainedRun.open(run_dir))
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return _generate(model, tokenizer, messages, **settings)


def export(run_dir, fmt="merged", **kwargs):
    """The base with the adapter merged in (RUN_DIR/export/merged/ unless output=...); see unify export."""
    from .exporting import export as _export

    return _export(run_dir, fmt, **kwargs)


__all__ = [
    "BackendUnavailable",
    "Interrupted",
    "JobSpec",
    "TrainingFailed",
    "UserError",
    "__version__",
    "evaluate",
    "export",
    "generate",
    "load_spec",
    "plan",
    "read_run",
    "resume",
    "run",
    "spec_from_dict",
]
