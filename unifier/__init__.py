"""unifier: one fine-tuning recipe, translated for ms-swift, unsloth or transformers+peft+trl.

    import unifier
    spec = unifier.load_spec("recipes/tiny-cpu-sft.yaml", overrides=["training.max_steps=5"])
    print(unifier.plan(spec, backend="peft").render())
    outcome = unifier.run(spec, backend="peft")
    record = unifier.read_run(outcome.run_dir)

Nothing heavy (torch, transformers) is imported until a backend runs.
"""

from .errors import BackendUnavailable, TrainingFailed, UserError
from .interrupts import Interrupted
from .spec import JobSpec, load_spec, spec_from_dict

__version__ = "0.1.0"


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


__all__ = [
    "BackendUnavailable",
    "Interrupted",
    "JobSpec",
    "TrainingFailed",
    "UserError",
    "__version__",
    "load_spec",
    "plan",
    "read_run",
    "resume",
    "run",
    "spec_from_dict",
]
